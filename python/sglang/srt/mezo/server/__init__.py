"""``--enable-mezo``: a SGLang server that also trains. Which hook goes where is
:mod:`sglang.srt.mezo.plugin`'s; this folder holds what the hooks run:

- the launch: the flags and what they turn on (:mod:`.launch_flags`), the settings carried to every
  process (:mod:`.settings`);
- the HTTP process: the job API on SGLang's app (:mod:`.http_api`), one module a resource
  (:mod:`.routes`: files, jobs, models, graders), a request checked into a run spec
  (:mod:`.job_requests`; a data file's format, :mod:`.file_formats`; a grader, :mod:`.grader_requests`),
  uploads within a bound (:mod:`.uploads`), OpenAI's objects (:mod:`.openai_objects`) and metric
  names and results CSV (:mod:`.openai_metrics`); the jobs' models served on demand within a bound
  (:mod:`.serving_middleware`, :mod:`.catalog`, :mod:`.adapter_cache`); an external grader's
  perturbed adapters loaded for the job's client (:mod:`.rollout_adapters`) and kept to its key
  (:mod:`.rollout_access`, :mod:`.job_keys`);
- the scheduler process: jobs' turns between serving batches (:mod:`.scheduler_jobs`), one job's
  run and its record (:mod:`.job_worker`), checkpoint retention (:mod:`.retention`), the steps
  of a job whose rewards come from its client (:mod:`.external_rewards`);
- both: the job store on disk (:mod:`.store`), a job's rollouts and rewards in it (:mod:`.rollout_book`);
- outside the server: a server started in a child process, for tests and benchmarks
  (:mod:`.local_server`); the client's loop of an external grader's job (:mod:`.rollout_client`).
"""

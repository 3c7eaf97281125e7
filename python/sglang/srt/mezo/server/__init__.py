"""``--enable-mezo``: a SGLang server that also trains. Launch flags (:mod:`.flags`), the
OpenAI-shaped HTTP API (:mod:`.http_api`), the job store (:mod:`.store`), job requests
(:mod:`.job_requests`), OpenAI's objects (:mod:`.openai_objects`), the worker that trains jobs in
the scheduler between serving batches (:mod:`.scheduler_jobs`) and its checkpoint retention
(:mod:`.retention`), the jobs' models served on demand within a bound (:mod:`.catalog`,
:mod:`.adapter_cache`, :mod:`.serving_middleware`), the upload limit (:mod:`.uploads`), and the
hooks that plug it all into SGLang (:mod:`.hooks`)."""

"""The OpenAI-shaped routes of ``--enable-mezo``, one module a resource: uploads (:mod:`.files`),
fine-tuning jobs (:mod:`.jobs`), the jobs' models (:mod:`.models`: deletion here, listing and serving
through :mod:`..serving_middleware`), the rollouts and rewards of a job whose grader is external
(:mod:`.rollouts`), graders (:mod:`.graders`). Each resource is a
:class:`~.base.Resource` that lists its routes; :mod:`..http_api` adds them to SGLang's app."""

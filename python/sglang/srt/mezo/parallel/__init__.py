"""Data-parallel MeZO: N worker processes, each with its own ModelRunner, exchanging two losses a
step (:mod:`.data_parallel`); how workers are launched (:mod:`.launch`)."""

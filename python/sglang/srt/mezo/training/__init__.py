"""Training: what MeZO perturbs (:mod:`.trainable`), the trainer (:mod:`.trainer`), the objectives
(:mod:`.objectives`), the step-wise run with its callbacks and checkpoints (:mod:`.run`,
:mod:`.callbacks`, :mod:`.checkpoints`), a run from spec to result (:mod:`.plan`,
:mod:`.finetune`), prompt search and replay."""

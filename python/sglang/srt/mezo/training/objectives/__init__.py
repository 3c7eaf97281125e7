"""Objectives: what a batch is and what its loss is (:class:`~.base.Objective`). Each objective is
one module, registered in :data:`OBJECTIVES` under its name."""

"""Zeroth-order maths on torch tensors, without SGLang: the noise z and the one path weights move
through (:mod:`.noise`, :mod:`.sign_kernel`), the update rules and learning-rate schedule
(:mod:`.update`), ZO-Adam (:mod:`.adam`), and the trajectory that records a run (:mod:`.trajectory`)."""

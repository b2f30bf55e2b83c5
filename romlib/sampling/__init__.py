"""Sampling: the diffusion schedules and samplers (:mod:`~romlib.sampling.diffusion`) and the two
GLIDE inpainting stages built on them (:mod:`~romlib.sampling.inpaint`)."""

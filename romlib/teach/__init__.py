"""Teaching helpers for the notebooks: the setup cell and widgets (:mod:`~romlib.teach.nb`), figures
(:mod:`~romlib.teach.viz`), the 2-D diffusion toy of notebook 01 (:mod:`~romlib.teach.toy`) and the
checked exercises (:mod:`~romlib.teach.exercises`, ``rl.check``)."""

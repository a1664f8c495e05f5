"""Speaker verification: the scoring the field reports, on embeddings of an index.

- :mod:`.metrics`: EER, minDCF and the DET curve of a score set (NIST definitions, ties
  handled exactly, vectorised for millions of trials);
- :mod:`.trials`: VoxCeleb trial lists (files or an index's ``extras["trials"]``) as
  sample-key pairs;
- :mod:`.norm`: mean subtraction and AS-norm against a cohort of training speakers;
- :mod:`.score`: cosine scores of trial lists, the report and the DET plot
  (``wds-pipeline score``).

Nothing is imported here: ``from wds_pipeline.sv.metrics import eer`` loads only numpy.
"""

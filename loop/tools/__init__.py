"""Tools of the guided side (the paper's MKO): retrieval over the corpus and a sandboxed Python executor.

They live in ``loop/`` because calibration calls them and they touch no weights (``trainer/``) and keep
no bytes (``store/``): the sandbox's temp directory is deleted when the call returns.
"""

"""tritonnet.bench: tritonnet's kernels against PyTorch's own (cuBLAS / cuDNN, torch.compile).

``harness`` times and records (one long-format CSV, ceilings measured in the same run),
one module per op family (``linear``) builds the cases, ``suite`` runs them
(``python -m tritonnet.bench``, ``tritonnet bench``), and ``plot`` turns a CSV into one
PNG per op and a short table. Timings come from a CUDA device only.
"""

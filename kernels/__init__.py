"""CUDA kernels (Numba-CUDA), installed as ``permenrich.kernels``.

Each kernel is a thin driver around the device-neutral functions that the CPU backend
also compiles (:func:`permenrich._compile.jit_family`): permutation draws, class-moment
statistics, radix ranking, the running-sum walk and random-set scores. Nothing here is
compiled at import; Numba compiles a kernel on its first launch. Importing this package
needs ``numba.cuda`` but no GPU; under ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in
Numba's CUDA simulator, which is how CI exercises their logic.
"""

import numpy as _np

# numba-cuda 0.30.4 (the newest as of 2026-11) registers an overload for np.row_stack when
# its CUDA target loads; NumPy 2.5 removed that alias of vstack, so every kernel's first
# compile fails there with AttributeError. Restore the alias (same function) until
# numba-cuda drops it; nothing changes where NumPy still has it.
if not hasattr(_np, "row_stack"):
    _np.row_stack = _np.vstack

import ctypes
import subprocess
import sys
import textwrap

import pytest

from ser_jax import host_memory

_GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

# Touches a 64 MiB block, frees it, allocates and touches one of the same size again (as XLA does with
# a step's temporaries) and prints the page faults of the second touch, per page.
_REFAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    from ser_jax import host_memory
    print(host_memory.retain_freed_memory() if sys.argv[1] == "retain" else False)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20
    block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size); ctypes.memset(block, 1, size)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (size / 4096))
""")


def _refaults(mode: str) -> tuple[str, float]:
    env = {"PATH": "/usr/bin:/bin"}  # No MALLOC_* or LD_PRELOAD from the test runner's environment.
    out = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not _GLIBC, reason="host_memory tunes glibc's malloc only")
def test_retained_memory_is_reused_without_new_page_faults():
    applied, retained = _refaults("retain")
    assert applied == "True"
    assert retained < 0.05  # The freed block came back as it was: no page to fault in and zero again.
    applied, default = _refaults("default")
    assert applied == "False"
    assert default > 0.9  # glibc unmapped it: every page faults again.


@pytest.mark.parametrize("setting", ["LD_PRELOAD", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"])
def test_an_allocator_the_user_chose_is_left_alone(setting):
    assert host_memory.retain_freed_memory({setting: "x"}) is False

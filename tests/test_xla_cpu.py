import json
import subprocess
import sys
import textwrap

import pytest

from ser_jax import xla_cpu

# Compiles the gradient of a small 3x3 conv layer's loss in a fresh process (XLA reads XLA_FLAGS at
# start-up) and prints, for each convolution of the compiled program, whether YNNPACK runs it.
_CONVOLUTIONS = textwrap.dedent("""
    import json, re, sys
    from ser_jax import xla_cpu
    applied = xla_cpu.prefer_xla_convolutions() if sys.argv[1] == "prefer" else False
    import jax, jax.numpy as jnp

    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jax.nn.relu(y) ** 2)

    w, x = jnp.ones((3, 3, 16, 32)), jnp.ones((8, 64, 20, 16))  # YNNPACK takes convolutions this size.
    text = jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
    bodies = dict(re.findall(r"^(%[\\w.-]+) \\(.*?\\{\\n(.*?)\\n\\}", text, re.S | re.M))
    entry = re.search(r"^ENTRY .*?\\{\\n(.*?)\\n\\}", text, re.S | re.M).group(1)
    convs = []  # Per convolution of the program: True where it runs inside a YNNPACK fusion.
    for line in entry.splitlines():
        callee = re.search(r"calls=(%[\\w.-]+)", line)
        if " convolution(" in line or (callee and " convolution(" in bodies.get(callee.group(1), "")):
            convs.append("__ynn_fusion" in line)
    print(json.dumps({"applied": applied, "ynn": convs}))
""")


def _convolutions(mode: str, xla_flags: str | None = None) -> dict:
    env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", _CONVOLUTIONS, mode], capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(xla_cpu.jaxlib_version() < (0, 10), reason="YNNPACK's convolutions by default: seen on jaxlib 0.10")
def test_convolutions_leave_ynnpack_only_with_the_setting():
    default = _convolutions("default")
    assert default["applied"] is False and len(default["ynn"]) >= 1 and any(default["ynn"])
    preferred = _convolutions("prefer")
    assert preferred["applied"] is True and len(preferred["ynn"]) == len(default["ynn"]) and not any(preferred["ynn"])
    # A user who asked for YNNPACK's convolutions keeps them.
    chosen = _convolutions("prefer", xla_cpu.FLAG + "=+individual_convolution")
    assert chosen["applied"] is False and any(chosen["ynn"])


def test_the_setting_joins_other_flags_and_leaves_a_users_choice_alone():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_cpu.prefer_xla_convolutions(environ, jaxlib=(0, 10, 2))
    assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 " + xla_cpu.SETTING
    assert not xla_cpu.prefer_xla_convolutions(environ, jaxlib=(0, 10, 2))  # Once only.
    users = {"XLA_FLAGS": xla_cpu.FLAG + "=+individual_convolution"}
    assert not xla_cpu.prefer_xla_convolutions(users, jaxlib=(0, 10, 2))
    assert users["XLA_FLAGS"] == xla_cpu.FLAG + "=+individual_convolution"


def test_a_jaxlib_without_the_flags_value_gets_nothing():
    environ = {}
    assert not xla_cpu.prefer_xla_convolutions(environ, jaxlib=(0, 8, 1))
    assert environ == {}
    assert xla_cpu.prefer_xla_convolutions(environ, jaxlib=(0, 8, 2))
    assert environ == {"XLA_FLAGS": xla_cpu.SETTING}


def test_the_setting_in_use_is_named_as_benchmarks_record_it():
    assert xla_cpu.convolution_setting({}) == "jaxlib default"
    assert xla_cpu.convolution_setting({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 " + xla_cpu.SETTING}) == "xla"
    assert xla_cpu.convolution_setting({"XLA_FLAGS": xla_cpu.FLAG + "=+individual_convolution"}) == "as XLA_FLAGS sets"

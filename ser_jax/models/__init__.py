"""Models are chosen by `config.model.name`: a new architecture is one new module in this package."""

import importlib

from flax import nnx


def create_model(model_config, *, num_classes: int, n_mels: int, prosody: int = 0, rngs: nnx.Rngs) -> nnx.Module:
    """Builds `ser_jax.models.<name>.Model` from the model config (every key but `name` is passed on),
    for inputs of `n_mels` mel bins followed by `prosody` columns."""
    settings = dict(model_config)
    name = settings.pop("name")
    try:
        module = importlib.import_module(f"ser_jax.models.{name}")
    except ModuleNotFoundError as e:
        raise ValueError(f"Unknown model {name!r}: there is no module ser_jax/models/{name}.py") from e
    return module.Model(num_classes=num_classes, n_mels=n_mels, prosody=prosody, rngs=rngs, **settings)

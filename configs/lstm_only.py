"""BiLSTM only: the recurrent layer (and the recipe's self-attention after it) straight on the
log-Mel frames, no conv blocks."""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    config.model.channels = ()
    config.lock()
    return config

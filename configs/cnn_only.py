"""CNN only: the same conv blocks, pooled over time without the BiLSTM."""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    config.model.lstm_hidden = 0
    config.lock()
    return config

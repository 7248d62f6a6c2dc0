"""The seed's model: CNN blocks over the log-Mel image, a BiLSTM over time, attention pooling."""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    config.lock()
    return config

"""CNN only: the same conv blocks without the BiLSTM (the recipe's self-attention layer and pooling
then work on the conv features)."""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    config.model.lstm_hidden = 0
    config.lock()
    return config

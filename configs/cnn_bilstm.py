"""The seed's model: CNN blocks over the log-Mel image, a BiLSTM over time, then (the recipe's
`model.attention_heads`) a residual self-attention layer, attention pooling."""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    config.lock()
    return config

"""CNN front-end + Conformer encoder: the conv blocks of cnn_bilstm, then self-attention and convolution
over time instead of the BiLSTM. The shared keys (channels, pooling, attention_dim, dropout, dtype)
keep the base values, so the comparison differs in the encoder only."""

import ml_collections

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    model = config.model.to_dict()
    del model["lstm_hidden"], model["lstm_skip"], model["attention_heads"]
    model.update(name="conformer", d_model=96, num_layers=2, num_heads=4, ff_mult=2, conv_kernel=15)
    config.model = ml_collections.ConfigDict(model)
    config.lock()
    return config

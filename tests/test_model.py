import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ser_jax.models import create_model
from ser_jax.models.layers import BiLSTM, length_mask, rotary, time_deltas

TINY = dict(name="cnn_bilstm", channels=(4, 8), lstm_hidden=8, pooling="attention", attention_dim=8, dropout=0.0)
TINY_CONFORMER = dict(name="conformer", channels=(4,), d_model=16, num_layers=1, num_heads=2, ff_mult=2,
                      conv_kernel=5, pooling="attention", attention_dim=8, dropout=0.0)
VARIANTS = {"cnn_bilstm": TINY, "cnn_only": {**TINY, "lstm_hidden": 0}, "lstm_only": {**TINY, "channels": ()},
            "bilstm_attention": {**TINY, "attention_heads": 2},
            "bilstm_skip": {**TINY, "lstm_skip": True, "attention_heads": 2},
            "mean_pooling": {**TINY, "pooling": "mean"},
            "deltas": {**TINY, "deltas": 2},
            "instance_norm": {**TINY, "instance_norm": 0.5},
            "residual": {**TINY, "residual": True},
            "lstm_only_deltas": {**TINY, "channels": (), "deltas": 1},
            "stats_pooling": {**TINY, "pooling": "attention_stats"},
            "conformer": TINY_CONFORMER,
            # Straight on the frames, the encoder itself must keep the garbage in the padding out.
            "conformer_on_frames": {**TINY_CONFORMER, "channels": ()},
            "transformer": {**TINY_CONFORMER, "conv_kernel": 0, "pooling": "mean"}}


def _model(base=TINY, **overrides):
    return create_model({**base, **overrides}, num_classes=5, n_mels=17, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_never_changes_predictions(variant):
    m = _model(VARIANTS[variant])
    model = jax.jit(lambda x, lengths: m(x, lengths))  # One compile per shape rather than per operation.
    x = jax.random.normal(jax.random.key(1), (3, 41, 17))
    lengths = jnp.array([41, 26, 9])
    ref = model(x, lengths)
    assert ref.shape == (3, 5)
    for extra in (1, 30):
        padded = jnp.pad(x, ((0, 0), (0, extra), (0, 0)), constant_values=123.0)
        np.testing.assert_allclose(model(padded, lengths), ref, atol=1e-5)
    # Garbage inside the padding of the shorter examples does not matter either.
    garbage = x.at[1, 26:].set(-50.0).at[2, 9:].set(77.0)
    np.testing.assert_allclose(model(garbage, lengths), ref, atol=1e-5)
    # And each example alone, unpadded, gives the batched result.
    for i, n in enumerate([41, 26, 9]):
        np.testing.assert_allclose(model(x[i:i + 1, :n], lengths[i:i + 1])[0], ref[i], atol=1e-5)


def test_batchnorm_statistics_ignore_padding():
    model = _model()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = jax.random.normal(jax.random.key(2), (2, 20, 17))
    lengths = jnp.array([20, 11])

    def train_forward(inputs):
        m = nnx.merge(graphdef, params, stats)
        out = m(inputs, lengths, train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
        return out, nnx.state(m, nnx.BatchStat)

    out1, s1 = train_forward(x)
    out2, s2 = train_forward(jnp.pad(x, ((0, 0), (0, 13), (0, 0)), constant_values=9.0))
    np.testing.assert_allclose(out1, out2, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s1, s2)
    assert not all(np.allclose(v, 0) for v in jax.tree.leaves(s1))


def test_bilstm_directions_see_only_their_side_of_the_valid_frames():
    lstm = BiLSTM(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (1, 6, 3))
    lengths = jnp.array([4])
    out = lstm(x, lengths)
    early = lstm(x.at[0, :2].set(5.0), lengths)  # Changes frames 0-1.
    late = lstm(x.at[0, 2:].set(5.0), lengths)  # Changes frames 2-5 (4-5 are padding).
    np.testing.assert_allclose(early[0, 2:4, 4:], out[0, 2:4, 4:], atol=1e-6)  # Backward: t..L-1 only.
    np.testing.assert_allclose(late[0, :2, :4], out[0, :2, :4], atol=1e-6)  # Forward: 0..t only.
    assert not np.allclose(early[0, 2:4, :4], out[0, 2:4, :4])
    assert not np.allclose(late[0, :2, 4:], out[0, :2, 4:])


@pytest.mark.parametrize("base", [TINY, TINY_CONFORMER], ids=["cnn_bilstm", "conformer"])
def test_bfloat16_compute_keeps_float32_params_and_logits(base):
    model = _model(base, dtype="bfloat16")
    logits = model(jnp.ones((2, 10, 17)), jnp.array([10, 5]))
    assert logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_bad_model_configs_fail_clearly():
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        _model(name="nope")
    with pytest.raises(ValueError, match="pooling"):
        _model(pooling="max")
    with pytest.raises(TypeError):
        _model(lstm_hiden=3)
    with pytest.raises(TypeError, match="lstm_hidden"):  # A BiLSTM key in a conformer config.
        _model(TINY_CONFORMER, lstm_hidden=8)
    with pytest.raises(ValueError, match="model.deltas"):
        _model(deltas=3)
    with pytest.raises(ValueError, match="fraction"):
        _model(instance_norm=1.5)
    with pytest.raises(ValueError, match="two or more conv blocks"):  # The one block is the last.
        _model(channels=(4,), instance_norm=0.5)
    with pytest.raises(ValueError, match="model.residual"):  # No conv blocks to make residual.
        _model(channels=(), residual=True)
    with pytest.raises(ValueError, match="lstm_skip"):  # Nothing to skip.
        _model(lstm_hidden=0, lstm_skip=True)
    with pytest.raises(ValueError, match="attention_heads=3"):  # 16 BiLSTM features do not split in 3.
        _model(attention_heads=3)
    with pytest.raises(ValueError, match="num_heads=3"):
        _model(TINY_CONFORMER, num_heads=3)
    with pytest.raises(ValueError, match="pooling"):
        _model(TINY_CONFORMER, pooling="max")
    with pytest.raises(ValueError, match="input_norm"):
        _model(TINY_CONFORMER, input_norm="speaker")


def test_attention_after_the_bilstm_is_a_residual_layer_that_changes_the_logits():
    model = _model(attention_heads=2)
    x = jax.random.normal(jax.random.key(3), (2, 24, 17))
    lengths = jnp.array([24, 15])
    with_attention = model(x, lengths)
    # A residual layer: with its output projection zeroed the model is front end, BiLSTM, pooling.
    model.attention.out.kernel.value = jnp.zeros_like(model.attention.out.kernel.value)
    model.attention.out.bias.value = jnp.zeros_like(model.attention.out.bias.value)
    h, frame_lengths = model.front_end(x, lengths, train=False, rngs=None)
    without = model.classify(model.pool_frames(model.lstm(h, frame_lengths), length_mask(frame_lengths, h.shape[1])))
    np.testing.assert_allclose(model(x, lengths), without, atol=1e-6)
    assert np.abs(np.asarray(with_attention - without)).max() > 1e-3


def test_lstm_skip_hands_the_conv_features_and_the_bilstm_output_to_the_layers_after_it():
    x = jax.random.normal(jax.random.key(7), (2, 24, 17))
    lengths = jnp.array([24, 15])
    skip, plain = _model(lstm_skip=True), _model()
    assert skip.head.in_features == skip.frame_features + 2 * 8 and plain.head.in_features == 2 * 8
    for model in (skip, plain):  # A silenced BiLSTM (every gate's input zero) outputs exactly zero.
        for param in (model.lstm.input_proj.kernel, model.lstm.input_proj.bias, model.lstm.recurrent):
            param.value = jnp.zeros_like(param.value)
    h, frame_lengths = skip.front_end(x, lengths, train=False, rngs=None)
    conv_only = jnp.concatenate([h, jnp.zeros((*h.shape[:2], 16))], axis=-1)
    np.testing.assert_allclose(skip(x, lengths), skip.classify(skip.pool_frames(conv_only, length_mask(
        frame_lengths, h.shape[1]))), atol=1e-6)
    # Without the skip a silenced BiLSTM leaves the head nothing of the input; with it the conv features remain.
    np.testing.assert_allclose(plain(x, lengths), plain(-x, lengths), atol=1e-6)
    assert np.abs(np.asarray(skip(x, lengths) - skip(-x, lengths))).max() > 1e-3


def test_rotary_attention_scores_depend_on_the_offset_only():
    q, k = jax.random.normal(jax.random.key(5), (2, 1, 12, 1, 8))
    scores = jnp.einsum("btnh,bsnh->ts", rotary(q), rotary(k))
    shifted = jnp.einsum("btnh,bsnh->ts", rotary(jnp.roll(q, 3, axis=1)), rotary(jnp.roll(k, 3, axis=1)))
    # Frames i, j moved to i + 3, j + 3 score as before (away from the wrap-around).
    np.testing.assert_allclose(shifted[3:, 3:], scores[:-3, :-3], rtol=1e-4, atol=1e-4)


def test_per_utterance_normalisation_ignores_level_and_channel_and_padding():
    model = _model(input_norm="utterance")
    x = jax.random.normal(jax.random.key(4), (2, 30, 17))
    lengths = jnp.array([30, 18])
    ref = model(x, lengths)
    # A louder recording through another microphone: every bin shifted and scaled by its own amount.
    gain = jnp.linspace(0.5, 2.0, 17)
    shift = jnp.linspace(-3.0, 4.0, 17)
    np.testing.assert_allclose(model(x * gain + shift, lengths), ref, atol=1e-3)
    np.testing.assert_allclose(model(jnp.pad(x, ((0, 0), (0, 9), (0, 0)), constant_values=7.0), lengths), ref,
                               atol=1e-5)
    assert not np.allclose(_model(input_norm="dataset")(x * gain + shift, lengths), _model()(x, lengths), atol=1e-3)
    with pytest.raises(ValueError, match="input_norm"):
        _model(input_norm="speaker")


def test_gain_normalisation_removes_the_level_but_keeps_the_spectral_shape():
    model = _model(input_norm="gain")
    x = jax.random.normal(jax.random.key(6), (2, 30, 17))
    lengths = jnp.array([30, 18])
    ref = model(x, lengths)
    # A louder recording: every bin moved by the same amount (and the dynamics scaled alike).
    np.testing.assert_allclose(model(1.7 * x + 3.0, lengths), ref, atol=1e-3)
    np.testing.assert_allclose(model(jnp.pad(x, ((0, 0), (0, 9), (0, 0)), constant_values=7.0), lengths), ref,
                               atol=1e-5)
    # A brighter voice (more energy in the upper bins) is another input, not the same one.
    tilt = jnp.linspace(-2.0, 2.0, 17)
    assert not np.allclose(model(x + tilt, lengths), ref, atol=1e-2)


def test_attentive_statistics_pooling_sees_how_much_a_feature_varies():
    from ser_jax.models.layers import AttentionPooling

    pool = AttentionPooling(3, 4, with_std=True, rngs=nnx.Rngs(0))
    mask = jnp.array([[True] * 6 + [False] * 2] * 2)
    steady = jnp.ones((1, 8, 3))
    swinging = jnp.array([1.0, 1.0, 0.0, 2.0, 2.0, 0.0, 9.0, 9.0])[None, :, None] * jnp.ones((1, 1, 3))
    out = pool(jnp.concatenate([steady, swinging]), mask)
    assert out.shape == (2, 6)
    # The first half is the weighted mean, the second the weighted std over the 6 valid frames.
    weights = jax.nn.softmax(pool.score(jnp.tanh(pool.score_hidden(swinging)))[0, :6, 0])
    mean = (weights[:, None] * swinging[0, :6]).sum(0)
    std = jnp.sqrt((weights[:, None] * jnp.square(swinging[0, :6] - mean)).sum(0))
    np.testing.assert_allclose(out[1], jnp.concatenate([mean, std]), atol=1e-3)
    np.testing.assert_allclose(out[0], [1, 1, 1, 0, 0, 0], atol=1e-2)


def test_time_deltas_are_the_slope_over_the_valid_frames_with_the_edges_repeated():
    ramp = jnp.stack([3.0 * jnp.arange(8.0), jnp.square(jnp.arange(8.0))], axis=-1)[None]  # (1, 8, 2)
    x = jnp.concatenate([ramp, jnp.pad(ramp[:, :5], ((0, 0), (0, 3), (0, 0)), constant_values=40.0)])
    d = time_deltas(x, jnp.array([8, 5]))
    np.testing.assert_allclose(d[0, 2:6, 0], 3.0, atol=1e-6)  # A straight line's slope, away from the edges.
    np.testing.assert_allclose(d[0, 2:6, 1], 2.0 * jnp.arange(2.0, 6.0), atol=1e-5)  # d(t^2)/dt = 2t.
    # At the first frame the two frames before it repeat it: (1 * (3 - 0) + 2 * (6 - 0)) / 10.
    np.testing.assert_allclose(d[0, 0, 0], 1.5, atol=1e-6)
    # The short example's last valid frames see its frame 4 repeated, not the padding; padding stays zero.
    np.testing.assert_allclose(d[1, :5], time_deltas(x[1:, :5], jnp.array([5]))[0], atol=1e-6)
    np.testing.assert_allclose(d[1, 3, 0], (1 * (12.0 - 6.0) + 2 * (12.0 - 3.0)) / 10, atol=1e-6)  # Frame 5 is 4's.
    np.testing.assert_array_equal(d[1, 5:], 0.0)


def test_deltas_widen_the_input_and_move_the_logits():
    plain, with_deltas = _model(), _model(deltas=2)
    assert with_deltas.blocks[0].conv.kernel.value.shape[2] == 3
    x = jax.random.normal(jax.random.key(3), (2, 20, 17))
    lengths = jnp.array([20, 14])
    assert not np.allclose(with_deltas(x, lengths), plain(x, lengths), atol=1e-4)
    # The same seed draws every other parameter alike: give the first kernel the plain model's weights
    # on the mel image and zeros on the slopes, and the two models agree.
    kernel = with_deltas.blocks[0].conv.kernel
    kernel.value = jnp.zeros_like(kernel.value).at[:, :, :1].set(plain.blocks[0].conv.kernel.value)
    np.testing.assert_allclose(with_deltas(x, lengths), plain(x, lengths), atol=1e-5)
    frames = _model(channels=(), deltas=1)
    assert frames.lstm.input_proj.kernel.value.shape[0] == 2 * 17


def test_instance_normalised_channels_forget_each_clips_level_and_the_batch():
    model = _model(instance_norm=0.5)
    block = model.blocks[0]
    assert (block.instance, model.blocks[1].instance) == (2, 0)  # Every block but the last.
    x = jax.random.normal(jax.random.key(4), (2, 30, 17))
    lengths = jnp.array([30, 19])
    valid = length_mask(lengths, 30)[:, :, None, None]

    def first_block_maps(inputs, train=True):
        h = block.conv(jnp.where(valid, inputs[..., None], 0))
        k = block.instance
        mask = jnp.broadcast_to(valid, h.shape)
        return (block.instance_norm(h[..., :k], mask=mask[..., :k]),
                block.norm(h[..., k:], use_running_average=not train, mask=mask[..., k:]))

    inst, batch = first_block_maps(x)
    # The instance-normalised maps have zero mean and unit variance over each clip's valid frames.
    for i, n in enumerate([30, 19]):
        np.testing.assert_allclose(inst[i, :n].mean((0, 1)), 0.0, atol=1e-4)
        np.testing.assert_allclose(inst[i, :n].std((0, 1)), 1.0, atol=1e-3)
    # Scaling one clip's input scales its conv maps (the conv has no bias): its instance-normalised
    # channels do not move, and neither does the other clip's; its batch-normalised ones do.
    louder = x.at[1].multiply(3.0)
    inst2, batch2 = first_block_maps(louder)
    np.testing.assert_allclose(inst2[:, :19], inst[:, :19], atol=1e-3)
    assert not np.allclose(batch2[1, :19], batch[1, :19], atol=1e-2)


def test_residual_blocks_start_as_their_shortcut_and_learn_the_second_conv_on_top():
    model = _model(channels=(4, 4), residual=True)
    first, second = model.blocks
    # A projection where the channel count changes (1 -> 4), the identity where it does not (4 -> 4).
    assert first.shortcut.kernel.shape == (1, 1, 1, 4) and second.shortcut is None
    assert second.conv2.kernel.shape == (3, 3, 4, 4)
    x = jax.random.normal(jax.random.key(5), (2, 20, 17))
    lengths = jnp.array([20, 13])
    valid = length_mask(lengths, 20)[:, :, None, None]
    inputs = jnp.where(valid, x[..., None], 0)
    mask = jnp.broadcast_to(valid, (2, 20, 17, 4))

    def pooled(h):
        h = jnp.pad(h, ((0, 0), (0, 0), (0, 1), (0, 0)))
        return h.reshape(2, 10, 2, 9, 2, 4).max(axis=(2, 4))

    # At initialisation the second BatchNorm's scale is zero: the block is ReLU(shortcut), pooled.
    shortcut = first.shortcut_norm(first.shortcut(inputs), use_running_average=True, mask=mask)
    out, _ = first(x[..., None], lengths, train=False, rngs=None)
    np.testing.assert_allclose(out, pooled(jnp.where(valid, jax.nn.relu(shortcut), 0)), atol=1e-6)
    # Once that scale moves, the two-conv path adds to the shortcut.
    first.norm2.scale[...] = jnp.ones(4)
    h = jnp.where(valid, jax.nn.relu(first.norm(first.conv(inputs), use_running_average=True, mask=mask)), 0)
    deep = first.norm2(first.conv2(h), use_running_average=True, mask=mask)
    out, _ = first(x[..., None], lengths, train=False, rngs=None)
    np.testing.assert_allclose(out, pooled(jnp.where(valid, jax.nn.relu(deep + shortcut), 0)), atol=1e-5)
    assert not np.allclose(deep, 0, atol=1e-3)
    # The identity shortcut adds the block's input unchanged.
    second.norm2.scale[...] = jnp.zeros(4)
    h2, _ = second(out, jnp.array([10, 7]), train=False, rngs=None)
    valid2 = length_mask(jnp.array([10, 7]), 10)[:, :, None, None]
    expected = jnp.where(valid2, out, 0)
    expected = jnp.pad(expected, ((0, 0), (0, 0), (0, 1), (0, 0))).reshape(2, 5, 2, 5, 2, 4).max(axis=(2, 4))
    np.testing.assert_allclose(h2, expected, atol=1e-6)


@pytest.mark.parametrize("variant", ["cnn_bilstm", "cnn_only", "lstm_only", "conformer"])
def test_prosody_columns_reach_the_encoder_and_their_padding_does_not(variant):
    m = create_model(VARIANTS[variant], num_classes=5, n_mels=17, prosody=2, rngs=nnx.Rngs(0))
    model = jax.jit(lambda x, lengths: m(x, lengths))
    x = jax.random.normal(jax.random.key(1), (2, 41, 19))
    lengths = jnp.array([41, 23])
    ref = model(x, lengths)
    # The pitch contour alone changed (one frame of the shorter example): its prediction moves.
    moved = model(x.at[1, 5, 18].add(3.0), lengths)
    assert not np.allclose(moved[1], ref[1], atol=1e-4)
    np.testing.assert_allclose(moved[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(model(x.at[1, 23:, 17:].set(99.0), lengths), ref, atol=1e-5)

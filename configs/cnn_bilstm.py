"""The recommended CNN-BiLSTM: the recipe (configs/base.py) trained twice as long towards two teachers,
a CNN-BiLSTM and a CNN-only model trained on the same data by the same command first and read as one
on every augmented batch (online distillation, ser_jax/distillation.py). One CNN-BiLSTM's cost at
inference, the pair's accuracy: on RAVDESS's six validation rounds +4.6 UA over the plain recipe (up
on all six) and +2.0 over the same student at 60 epochs; in 6-fold speaker CV (refit) 65.5 over three
seeds (65.9 for this very command, one per fold), +2.4 to +3.0 over the plain recipe's same seeds
(docs/results/accuracy.md, sessions 39-42).

    python -m ser_jax.main --config configs/cnn_bilstm.py --workdir runs/ravdess \\
        --config.data.corpus=ravdess --config.data.source_dir=/path/to/RAVDESS

trains runs/ravdess/teachers/cnn_bilstm_plain_seed0 and cnn_only_seed1 (60 epochs each; on a CPU side by
side, each logging to its train.log), then the student in runs/ravdess (120 epochs): about four times a
plain run's time (12.5 minutes on 2 vCPUs, session 43). Every part resumes. The plain recipe alone, one
run: configs/cnn_bilstm_plain.py.
"""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    # The teachers: the plain recipe's CNN-BiLSTM and CNN-only model, seeds seed and seed + 1.
    config.distill.teacher_configs = "configs/cnn_bilstm_plain.py,configs/cnn_only.py"
    # 120 epochs against the recipe's 60: the teachers' answers on each augmented view are a target that
    # keeps changing; on validation speakers 120 epochs beat 60 on five rounds of six.
    config.train.num_epochs = 120
    # 30 validations instead of 120: each takes about a fifth of one of this run's epochs on a CPU.
    config.train.eval_every_epochs = 4
    config.lock()
    return config

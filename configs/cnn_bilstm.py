"""The recommended CNN-BiLSTM: the recipe (configs/base.py) trained towards two teachers, a CNN-BiLSTM and a
CNN-only model trained on the same data by the same command first and read as one on every augmented batch
(online distillation, ser_jax/distillation.py), starting from the CNN-BiLSTM teacher's weights. One
CNN-BiLSTM's cost at inference: on RAVDESS's six validation rounds the student of
120 epochs from scratch was +4.6 UA over the plain recipe (up on all six) and 65.5 in 6-fold speaker CV
over three seeds; started from its teacher, 60 epochs are level with it on the same rounds (-0.5, up on
two, level on one) and in the CV (65.7 against 65.9 on the same folds and teachers), at three quarters
of the command's time. This command, whole, scores 63.6 over three seeds (65.7, 62.7, 62.3): the student
ends about 2 points above the CNN-BiLSTM teacher it starts from, whose seed carries over
(docs/results/accuracy.md, sessions 39-45).

    python -m ser_jax.main --config configs/cnn_bilstm.py --workdir runs/ravdess \\
        --config.data.corpus=ravdess --config.data.source_dir=/path/to/RAVDESS

trains runs/ravdess/teachers/cnn_bilstm_plain_seed0 and cnn_only_seed1 (60 epochs each; on a CPU side by
side, each logging to its train.log), then the student in runs/ravdess (60 epochs from the first teacher's
weights): 8 min 55 s on 2 vCPUs (session 44). Every part resumes. The plain recipe alone, one run:
configs/cnn_bilstm_plain.py.
"""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    # The teachers: the plain recipe's CNN-BiLSTM and CNN-only model, seeds seed and seed + 1.
    config.distill.teacher_configs = "configs/cnn_bilstm_plain.py,configs/cnn_only.py"
    # The student starts where the CNN-BiLSTM teacher ended, then trains the recipe's 60 epochs towards the
    # pair: on the six validation rounds level with 120 epochs from a random start (-0.5), which beat 60 from
    # a random start on five rounds of six (+2.0), at three quarters of the command's time.
    config.distill.warm_start = True
    config.train.num_epochs = 60
    # 15 validations instead of 60: each takes about a fifth of one of this run's epochs on a CPU.
    config.train.eval_every_epochs = 4
    config.lock()
    return config

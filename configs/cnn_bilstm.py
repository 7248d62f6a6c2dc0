"""The recommended CNN-BiLSTM: the recipe (configs/base.py) trained after two teachers of its own data, a
CNN-BiLSTM and a CNN-only model, trained by the same command first. The student starts from the CNN-BiLSTM
teacher's weights and learns from the CNN-only teacher, which reads every augmented batch (online
distillation, ser_jax/distillation.py). One CNN-BiLSTM's cost at inference. On RAVDESS's six validation
rounds the student of 120 epochs from scratch, taught by the pair read as one, was +4.6 UA over the plain
recipe (up on all six) and 65.5 in 6-fold speaker CV over three seeds; started from its teacher, 60 epochs
are level with it on the same rounds (-0.5) and in the CV (65.7 against 65.9 on the same folds and teachers),
at three quarters of the command's time. So taught, this command scored 63.6 over three seeds (65.7, 62.7,
62.3), about 2 points above the CNN-BiLSTM teacher it starts from, whose seed carries over; taught by the
CNN-only teacher alone (since session 48), 64.0 over the same seeds and teachers (65.8, 63.0, 63.1;
docs/results/accuracy.md, sessions 39-47).

    python -m ser_jax.main --config configs/cnn_bilstm.py --workdir runs/ravdess \\
        --config.data.corpus=ravdess --config.data.source_dir=/path/to/RAVDESS

trains runs/ravdess/teachers/cnn_bilstm_plain_seed0 and cnn_only_seed1 (60 epochs each; on a CPU side by
side, each logging to its train.log), then the student in runs/ravdess (60 epochs from the first teacher's
weights, reading the second alone): 8 min 22 s on 2 vCPUs (session 48). Every part resumes. The plain
recipe alone, one run: configs/cnn_bilstm_plain.py.
"""

from configs.base import get_base_config


def get_config():
    config = get_base_config()
    # The teachers: the plain recipe's CNN-BiLSTM and CNN-only model, seeds seed and seed + 1.
    config.distill.teacher_configs = "configs/cnn_bilstm_plain.py,configs/cnn_only.py"
    # The student starts where the CNN-BiLSTM teacher ended, then trains the recipe's 60 epochs: taught by the
    # pair, on the six validation rounds level with 120 epochs from a random start (-0.5), which beat 60 from
    # a random start on five rounds of six (+2.0), at three quarters of the command's time.
    config.distill.warm_start = True
    config.train.num_epochs = 60
    # It learns from the CNN-only teacher alone; the CNN-BiLSTM teacher is its start, not read after: on the six
    # validation rounds with both teacher seeds +0.9 over the pair read as one (up on 7 of 12), in the CV +0.4
    # over three seeds (64.0 against 63.6, up on 12 fold runs of 18), and a sixth less of the student's time.
    config.distill.teacher_weights = "0,1"
    # 15 validations instead of 60: each takes about a fifth of one of this run's epochs on a CPU.
    config.train.eval_every_epochs = 4
    config.lock()
    return config

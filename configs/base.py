"""Settings shared by every model config; each model file changes only what makes it that model."""

import ml_collections
from ml_collections.config_dict import placeholder


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Which prepared datasets to train on. With data_dir empty, <workdir>/data is used; the synthetic
    # corpus (the default) is generated and prepared there on first use. Several corpora train
    # together as "ravdess,tess", with source_dir / data_dir / corpus_weights one entry each, in order.
    c.data = ml_collections.ConfigDict(dict(
        data_dir="",
        corpus="synthetic",
        source_dir="",  # Set it to prepare a downloaded corpus before training.
        train_only="",  # Corpora used whole for training, never for validation or test (e.g. "tess": 2 speakers).
        corpus_weights="",  # Relative sampling weight of each corpus; empty: a plain union of the examples.
        folds=0,  # >= 3: train on speaker folds (the round testing on fold `test_fold`) instead of train/val/test.
        test_fold=0,
        validation_fold=placeholder(int),  # Unset: the fold after test_fold (round i validates on fold i+1).
        split_seed=0,
        train_split="train",
        validation_split="validation",
        test_split="test",
        max_frames=250,  # Training crops (and pads) to 2.5 s (trimmed RAVDESS: median 1.9 s): one compiled shape.
        # Evaluation pads each batch to a multiple of this: few compiles, little waste. On CPU, batches
        # of 32 in 50-frame steps validate RAVDESS in 1.8 s against 2.4 s for 64 in 100-frame steps.
        eval_bucket_frames=50,
        # TRANSDUCTIVE, off: normalise every clip by its own speaker's statistics, the validation and
        # test speakers' from their own unlabelled audio. Figures with it are reported apart from the
        # inductive ones, and its models are for evaluation only (prediction refuses them).
        transductive_speaker_norm=False,
        # Refit: the validation speakers train too, and the model is the last checkpoint of the fixed
        # schedule (whose length and settings validation runs chose). More voices to learn from;
        # nothing left to pick a checkpoint on, so only for a recipe already chosen.
        refit=False,
        worker_threads=2,
        # Training examples are decoded once and kept in memory when they take at most this many MB
        # (RAVDESS's training split: 28 MB); 0: decoded from disk at every draw, half of the pipeline's CPU.
        cache_train_mb=1024,
        # The synthetic corpus' size and seed; unset, the generator's defaults (as `python -m data_prep`).
        synthetic=ml_collections.ConfigDict(dict(
            n_speakers=placeholder(int), utterances_per_emotion=placeholder(int), seed=placeholder(int))),
    ))
    # The log-Mel frontend used when this config prepares a corpus (data_prep's defaults). Typed
    # placeholders, so `--config.features.fmax=7600` can set what defaults to None.
    c.features = ml_collections.ConfigDict(dict(
        sample_rate=16000, n_mels=40, window_ms=25.0, hop_ms=10.0, n_fft=placeholder(int), fmin=0.0,
        fmax=placeholder(float), amin=1e-10,
        trim_db=40.0,  # Cut leading/trailing audio 40 dB below the loudest frame (None: keep it all).
        pitch=True))  # Add each frame's periodicity and log F0 after the mel bins (False: log-Mel only).
    c.model = ml_collections.ConfigDict(dict(
        name="cnn_bilstm", channels=(16, 32),
        deltas=0,  # 1 or 2: each mel bin's slope over time (and its slope) as more input channels of the conv.
        instance_norm=0.0,  # >0: this share of the channels of each conv block before the last normalised per clip.
        residual=False,  # True: each conv block a ResNet basic block (two 3x3 convs and a shortcut) before its pooling.
        lstm_hidden=48,
        lstm_skip=False,  # True: the conv features go around the BiLSTM and join its output for the layers after it.
        attention_heads=4,  # >0: a residual self-attention layer with this many heads after the BiLSTM.
        pooling="attention", attention_dim=32, dropout=0.1, input_norm="dataset", dtype="float32"))
    c.optim = ml_collections.ConfigDict(dict(
        lr=3e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=1e-4, grad_clip=1.0,
        ema_decay=0.99,  # >0: validate, checkpoint for inference and deploy an average of the weights.
        # >0: sharpness-aware minimisation (SAM) with this radius, from sam_start of the way through the
        # schedule on: each step then takes its gradient at the worst nearby weights (twice the compute).
        sam_rho=0.0, sam_start=0.5,
    ))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=32, eval_batch_size=32, num_epochs=60, label_smoothing=0.1, log_every_steps=10,
        checkpoint_every_steps=0, keep_best=3,
        # Validate every this many epochs and after the last; checkpoints, still written every epoch, are
        # kept as the best by validation UA among the validated ones. Validation at the five test-time
        # speeds takes about a third of the plain recipe's epoch on RAVDESS on a CPU.
        eval_every_epochs=1,
        class_balance=False,  # True: weight each example's loss by 1 / its class's training frequency.
        # >0: speaker-adversarial training with this weight: a classifier of the training speakers reads
        # the utterance embedding through a gradient reversal (ser_jax/speaker_adversary.py).
        speaker_adversary=0.0,
        # A text field of the clips ("intensity", "gender"): a linear head learns it from the utterance
        # embedding beside the emotions, its loss weighted by auxiliary_weight (ser_jax/auxiliary_task.py).
        auxiliary_task="", auxiliary_weight=0.3,
        # >1: from branch_start of the way through the schedule, this many copies of the model train on,
        # each with its own augmentation and dropout noise, and the model is their weights' average
        # (ser_jax/branches.py; each copy costs a run's steps from there). branch_merge_epochs > 0:
        # every copy is also replaced by the average every that many epochs.
        branches=1, branch_start=0.5, branch_merge_epochs=0,
    ))
    # Knowledge distillation, off: each training target blends the label with teachers' averaged
    # class probabilities (ser_jax/distillation.py). teachers: comma-separated predictions.csv files
    # (or globs) of teacher models on the training clips; "{test_fold}" stands for data.test_fold.
    c.distill = ml_collections.ConfigDict(dict(
        teachers="",
        weight=0.5,  # The teachers' share of each target; the label keeps the rest.
        temperature=2.0,  # >1 flattens the teachers' probabilities (softmax of their logits / T).
        # True: each comma-separated entry of teachers is one teacher pieced from the files it matches,
        # which score disjoint clips: out-of-fold predictions, each clip scored by a model that never
        # heard its speaker (the teachers' verdicts on voices they do not know, not their memory).
        cross_fitted=False,
        # Online, instead of teachers: training workdirs (comma-separated, globs, "{test_fold}") whose
        # models, at teacher_checkpoint and read as one, score every augmented training batch.
        teacher_models="", teacher_checkpoint="latest",
        # Comma-separated, one per online teacher in teacher_models' (or teacher_configs') order: each one's
        # share of their mean probabilities ("": equal). 0 leaves a teacher unread (still the warm start).
        teacher_weights="",
        # Or config files (comma-separated) of teachers this run trains first, on its own data with seeds
        # seed, seed + 1, ..., in teacher_workdir (empty: <workdir>/teachers; "{test_fold}" filled in),
        # then learns from online as from teacher_models: one command for a student and its teachers.
        teacher_configs="", teacher_workdir="",
        # On a single-process CPU run, this many of those teachers train side by side, each in a process
        # of its own logging to <its workdir>/train.log (one run leaves part of a CPU idle); elsewhere,
        # and at 1, one after the other.
        teacher_processes=2,
        # True: the student starts from its first online teacher's weights (which must be the student's
        # architecture) instead of a random initialisation, with a fresh optimiser and schedule.
        warm_start=False,
        # < 1: the warm start is this much of the teacher's weights and the rest of the student's own random
        # initialisation ("shrink and perturb", Ash & Adams, 2020): a start less committed to one teacher.
        warm_start_keep=1.0))
    c.augment = ml_collections.ConfigDict(dict(
        speed=0.1,  # >0: play each example up to this much faster or slower (tempo and pitch together).
        vtlp=0.0,  # >0: scale each example's frequencies by up to this much (vocal-tract length).
        # >0: with this probability, give an example the per-mel-bin mean and std of a Beta(alpha, alpha)
        # mix of its own and another example's (Freq-MixStyle: other speakers' long-term spectra).
        freq_mixstyle=0.4, mixstyle_alpha=0.3,
        mixstyle_f0=False,  # True: MixStyle moves the log F0 column's mean too (the partner's pitch register).
        gain_db=6.0,  # >0: make each example up to this many dB louder or quieter (recording level).
        tilt_db=10.0,  # >0: tilt each spectrum by up to this many dB, lowest to highest bin (microphone colour).
        spec_augment=True, freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=20,
        mixup=False, mixup_alpha=0.4))
    # How the trained model classifies, recorded with it, so validation, evaluation, prediction,
    # streaming, export and serving all do the same: every clip is also played at these rates (as
    # speed perturbation plays it in training) and the probabilities averaged; () reads the clip as
    # it is. One model pass per rate.
    # prior_correction: the probabilities are divided by the training class frequencies to this power
    # (then renormalised): at 1 the model decides as if every emotion were equally common, which is
    # what UA scores (RAVDESS has half as many neutral clips as of each other emotion); 0: the
    # training mix's odds. Free at inference: one addition to the log-probabilities.
    c.inference = ml_collections.ConfigDict(dict(test_time_speeds=(0.9, 0.95, 1.0, 1.05, 1.1),
                                                 prior_correction=1.0))
    # Evaluation (--mode=eval): empty fields default to the training dataset's test split. A split
    # that several prepared datasets under data_dir hold (each K-fold one has a fold1) names its
    # dataset too: split="folds6/fold1".
    # classes="neutral,happy,...": score only these (the classes two corpora share): the model chooses
    # among them alone and examples of other emotions are left out.
    # test_time_speeds: read the model at these rates instead of its recorded ones (() : one pass), to
    # measure what the averaging buys or what a deployment overriding it would score.
    # prior_correction: read the model with this correction instead of its recorded one (0: none).
    # test_time_crops: read each clip longer than the training crops (data.max_frames) as this many
    # crops of that length, evenly spaced from its start to its end, and average the probabilities
    # (0: read it whole, as deployment does).
    # model: evaluate this packaged model (a name or a folder of `python -m ser_jax.pretrained`, e.g.
    # an ensemble of this run and others) instead of the workdir's checkpoint, on the same data.
    c.eval = ml_collections.ConfigDict(dict(data_dir="", corpus="", split="", checkpoint="best", output_dir="",
                                            model="", classes="", test_time_speeds=placeholder(tuple),
                                            prior_correction=placeholder(float), test_time_crops=0))
    return c

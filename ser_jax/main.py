"""`python -m ser_jax.main --config configs/cnn_bilstm.py --workdir DIR` (training) or `--workdir DIR --mode=eval`.

Parses flags, joins the multi-host job if asked to, and hands the config to the trainer or evaluator.
Multi-host: pass --coordinator_address/--num_processes/--process_id (or --distributed on clusters
that JAX detects itself: Cloud TPU, SLURM, Kubernetes), and every process runs this same command.

`--mode=eval` evaluates the model a workdir trained, with the config that run saved (config.json):
only the `eval` section is taken from the command line (`--config.eval.checkpoint=latest`, ...).
Overriding anything else, or naming a --config whose model or features differ from the trained
ones, is refused: those settings are the checkpoint's and cannot change at evaluation.
"""

import json
import os

import configs
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

# --mode=eval takes only the eval section of this config (and runs without --config); training needs one.
_EVAL_DEFAULTS = os.path.join(os.path.dirname(configs.__file__), "cnn_bilstm.py")
config_flags.DEFINE_config_file("config", _EVAL_DEFAULTS, "Config file, e.g. configs/cnn_bilstm.py (training).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and reports go.", required=True)
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes if the workdir has checkpoints) or eval.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detected settings.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process' index in a multi-process run.")
FLAGS = flags.FLAGS
EVAL_SECTION = "eval"
TRAINED_SECTIONS = ("model", "features")  # What a checkpoint fixes: a --config for eval must agree on them.


def eval_config(workdir: str, flag_config: ml_collections.ConfigDict, overrides: dict,
                config_given: bool) -> ml_collections.ConfigDict:
    """The workdir's training config with the eval section from the command line.

    Raises ValueError for overrides outside `eval` and for a given config file whose model or
    features differ from the trained ones, rather than ignoring them.
    """
    from ser_jax import config_files

    trained = config_files.load_from_workdir(workdir)
    refused = sorted(k for k in overrides if k.split(".")[0] != EVAL_SECTION)
    if refused:
        raise ValueError(
            f"--mode=eval evaluates the model {workdir} trained, with its config.json; only --config.eval.* can be "
            f"set. Refused: {', '.join('--config.' + k for k in refused)}")
    if config_given:
        as_json = lambda c: json.loads(c.to_json())  # noqa: E731  Tuples and lists compare alike.
        differing = [s for s in TRAINED_SECTIONS if as_json(flag_config[s]) != as_json(trained[s])]
        if differing:
            raise ValueError(
                f"--config differs from what {workdir} was trained with in {', '.join(differing)} (see its config.json): leave --config out to evaluate the "
                f"trained model, or give the config and overrides it was trained with")
    with trained.unlocked():
        trained[EVAL_SECTION] = flag_config[EVAL_SECTION]
    return trained


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; the progress bar says enough.
        logging.set_verbosity(logging.WARNING)
    if FLAGS.mode == "train" and not FLAGS["config"].present:
        raise app.UsageError("Training needs --config, e.g. --config configs/cnn_bilstm.py")
    config = FLAGS.config
    if FLAGS.mode == "eval":
        try:
            config = eval_config(FLAGS.workdir, FLAGS.config, config_flags.get_override_values(FLAGS["config"]),
                                 FLAGS["config"].present)
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(str(e)) from e
    from ser_jax import host_memory, xla_cpu

    host_memory.retain_freed_memory()  # Before JAX starts its threads.
    xla_cpu.prefer_xla_convolutions()  # Before XLA's CPU client starts.
    import jax

    if FLAGS.coordinator_address or FLAGS.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; others ignore it.
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.mode == "train":
        from ser_jax import train

        train.train_and_evaluate(config, FLAGS.workdir)
    else:
        from ser_jax import evaluate

        evaluate.evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)

"""`python -m ser_jax.main --config configs/cnn_bilstm.py --workdir DIR [--mode train|eval]`.

Parses flags, joins the multi-host job if asked to, and hands the config to the trainer or evaluator.
Multi-host: pass --coordinator_address/--num_processes/--process_id (or --distributed on clusters
that JAX detects itself: Cloud TPU, SLURM, Kubernetes), and every process runs this same command.
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnn_bilstm.py.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and reports go.", required=True)
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes if the workdir has checkpoints) or eval.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detected settings.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process' index in a multi-process run.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; the progress bar says enough.
        logging.set_verbosity(logging.WARNING)
    import jax

    if FLAGS.coordinator_address or FLAGS.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; others ignore it.
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.mode == "train":
        from ser_jax import train

        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        from ser_jax import evaluate

        evaluate.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)

"""ser_jax: speech emotion recognition in JAX/Flax."""

"""A real-time emotion server: `python -m ser_jax.serve --workdir DIR [--host 127.0.0.1 --port 8000]`.

    GET  /            a page that listens to the microphone and shows the emotion live (static/index.html)
    POST /v1/predict  an audio file -> its emotion, as `Predictor.predict`, plus per-window segments (uploads.py)
    WS   /v1/stream   raw PCM in, one estimate per hop out, as `predict --stream` (streams.py)
    GET  /healthz, /v1/model, /v1/stats

Every window, from every stream and upload, goes through one micro-batcher (batcher.py) that owns
the jitted window function; limits.py holds what a client may ask; server.py runs uvicorn with
draining on SIGTERM. Inference layer: no training code, no dataset readers.
"""

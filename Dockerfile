# One image, two Cloud Run services: FUNCTION_TARGET picks precall_webhook (default) or cleanup_voices.
FROM python:3.12-slim-bookworm

# ffmpeg: pydub's fallback decoder and trimmer (the common path decodes in-process with libsndfile).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

COPY main.py ./
COPY wiring.py ./
COPY voiceclone/ voiceclone/
COPY precall/ precall/
COPY cleanup/ cleanup/

USER app
# THREADS: gunicorn threads per instance; keep >= Cloud Run --concurrency (calls mostly wait on ElevenLabs).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FUNCTION_TARGET=precall_webhook \
    THREADS=40 \
    PORT=8080
EXPOSE 8080
# functions-framework reads --target from FUNCTION_TARGET and --port from PORT; the decorators in
# main.py fix each target's signature type (http / cloudevent).
CMD ["functions-framework"]

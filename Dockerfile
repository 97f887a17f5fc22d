# One image, two Cloud Run services: FUNCTION_TARGET picks precall_webhook (default) or cleanup_voices.
FROM python:3.12-slim-bookworm

# No ffmpeg: samples are validated and trimmed in-process (libsndfile, bundled in the soundfile wheel),
# so no subprocess decoder can be made to decode a crafted file without bound (docs/design.md).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

COPY main.py ./
COPY wiring.py ./
COPY serving/ ./serving/
COPY voiceclone/ voiceclone/
COPY precall/ precall/
COPY cleanup/ cleanup/
COPY telephony/ telephony/
COPY doctor/ doctor/

USER app
# THREADS: gunicorn threads per instance (serving/ defaults it to 256); keep >= Cloud Run --concurrency.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FUNCTION_TARGET=precall_webhook \
    PORT=8080
EXPOSE 8080
# functions-framework reads --target from FUNCTION_TARGET and --port from PORT; the decorators in
# main.py fix each target's signature type (http / cloudevent).
CMD ["functions-framework"]

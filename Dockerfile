# One image for every genfleet role (worker, flower, producer); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY genfleet ./genfleet
COPY workers ./workers
COPY producer ./producer
COPY simulator ./simulator
RUN pip install --no-cache-dir .
ENV GENFLEET_HOME=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
CMD ["genfleet", "--help"]

# The example "legacy API" (examples/flask-api) as deploy/docker-compose.yml runs it; built with
# examples/flask-api as its context. Kept correct by reading (no Docker engine where cachalot
# is developed) and by tests/deploy.rs, which checks that what it copies exists.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY app.py .
ENV PORT=5000 FLASK_API_DB=/tmp/flask-api.sqlite3
USER 65534:65534
EXPOSE 5000
# `python app.py` binds 127.0.0.1, which no other container can reach: create the database
# and serve on every interface instead.
CMD ["python", "-c", "import app; app.init_db(); app.app.run(host='0.0.0.0', port=app.PORT, threaded=True)"]

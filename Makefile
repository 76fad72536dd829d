# Tessera: the two commands a new machine needs are `make run` and `make test`.
# Both install what they need first (scripts/setup.sh, idempotent).

CARGO ?= cargo
FIXTURES := target/fixtures
export TESSERA_FIXTURES := $(abspath $(FIXTURES))

.PHONY: setup setup-test fixtures build run demo test test-rust test-browser test-shaped test-whip lint bench fuzz clean-fixtures

setup:
	@./scripts/setup.sh

# Browsers, npm drivers, iptables for the shaped-link test and the aiortc venv: only the
# tests need them.
setup-test: setup
	@./scripts/setup-browser.sh
	@./scripts/setup-netns.sh
	@./scripts/setup-rtmp.sh
	@./scripts/setup-python.sh

fixtures: setup
	@./scripts/make-fixtures.sh $(FIXTURES)

build: setup
	$(CARGO) build --release -p tessera

# The server on the embedded default config: open http://127.0.0.1:8080/?room=demo&name=Ann
run: setup
	$(CARGO) run --release -p tessera -- serve

# A 4-person room rendered offline from fixture files (no network, no browser).
demo: fixtures
	$(CARGO) run --release -p tessera -- render \
	  --participant name=Ann,video=$(FIXTURES)/p1.ivf,audio=$(FIXTURES)/p1.ogg \
	  --participant name=Bo,video=$(FIXTURES)/p2.h264,audio=$(FIXTURES)/p2.wav \
	  --participant name=Cy,video=$(FIXTURES)/p3.ivf,audio=$(FIXTURES)/p3.ogg \
	  --participant name=Di,audio=$(FIXTURES)/p4.ogg \
	  --video-out out/demo.ivf --audio-out out/demo.ogg
	@echo "Play it with: ffplay out/demo.ivf ; ffplay out/demo.ogg"

# One `cargo test` runs unit, integration and doc tests from a single build (running
# cargo-nextest and then the doc tests rebuilt the C codecs under a different fingerprint).
# Browser and aiortc tests drive the debug `tessera` binary that `cargo test` just built.
test: fixtures setup-test
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-browser test-shaped test-whip

test-rust: fixtures
	$(CARGO) test --workspace --no-fail-fast

# run.mjs: one server, Chromium and Firefox ESR. share.mjs: one server, a screen shared from
# Chromium's fake capture in the presenter layout, and viewers' own layouts (under 10 s).
# cluster.mjs: two nodes on a private redis-server, a page joining through the node without
# the room, the room's node killed.
# paths.mjs: a Chromium in a network namespace that drops all UDP joins over ICE-TCP, and
# pages relayed by a private coturn over UDP and TCP (needs root; prints SKIP otherwise).
test-browser:
	TESSERA_BIN=$(abspath target/debug/tessera) node tests/browser/run.mjs
	TESSERA_BIN=$(abspath target/debug/tessera) node tests/browser/share.mjs
	TESSERA_BIN=$(abspath target/debug/tessera) node tests/browser/cluster.mjs
	TESSERA_BIN=$(abspath target/debug/tessera) node tests/browser/paths.mjs

# Three Chromium participants, two behind links shaped with tc tbf and tessera-netem in
# network namespaces (needs root; prints SKIP otherwise). `node tests/browser/shaped.mjs
# --report` prints the figures for docs/performance.md.
test-shaped:
	$(CARGO) build -p tessera-netem
	TESSERA_BIN=$(abspath target/debug/tessera) TESSERA_NETEM_BIN=$(abspath target/debug/tessera-netem) node tests/browser/shaped.mjs

test-whip:
	TESSERA_BIN=$(abspath target/debug/tessera) target/venv/bin/python tests/whip/test_whip_whep.py
	TESSERA_BIN=$(abspath target/debug/tessera) target/venv/bin/python tests/whip/test_protocol.py

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: fixtures
	$(CARGO) bench -p tessera --bench media
	$(CARGO) bench -p tessera-server --features test-kit --bench reactor
	./benches/render-vs-ffmpeg.sh 20

# Fuzzing with cargo-fuzz on nightly (not part of `make test`): each target runs for
# FUZZ_SECONDS; the first crash stops it, its input saved in fuzz/artifacts/TARGET/.
# New inputs collect in fuzz/corpus/TARGET (ignored by git); fuzz/seeds is committed.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= signalling sdp rtp_vp8 rtp_h264 rtp_opus
# An input taking over 10 s, or a process over 2 GiB, counts as a crash too.
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048

fuzz: setup
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) || exit 1; \
	done

clean-fixtures:
	rm -rf $(FIXTURES)

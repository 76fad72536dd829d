# Tessera: the two commands a new machine needs are `make run` and `make test`.
# Both install what they need first (scripts/setup.sh, idempotent).

CARGO ?= cargo
FIXTURES := target/fixtures
export TESSERA_FIXTURES := $(abspath $(FIXTURES))

.PHONY: setup fixtures build run test lint bench demo clean-fixtures

setup:
	@./scripts/setup.sh

fixtures: setup
	@./scripts/make-fixtures.sh $(FIXTURES)

build: setup
	$(CARGO) build --release -p tessera

# Until the live server lands, `make run` renders a 4-person demo room offline with the
# embedded default config and prints where the composite video and mix went.
run: fixtures
	$(CARGO) run --release -p tessera -- render \
	  --participant name=Ann,video=$(FIXTURES)/p1.ivf,audio=$(FIXTURES)/p1.ogg \
	  --participant name=Bo,video=$(FIXTURES)/p2.h264,audio=$(FIXTURES)/p2.wav \
	  --participant name=Cy,video=$(FIXTURES)/p3.ivf,audio=$(FIXTURES)/p3.ogg \
	  --participant name=Di,audio=$(FIXTURES)/p4.ogg \
	  --video-out out/demo.ivf --audio-out out/demo.ogg
	@echo "Play it with: ffplay out/demo.ivf ; ffplay out/demo.ogg"

# One `cargo test` runs unit, integration and doc tests from a single build (running
# cargo-nextest and then the doc tests rebuilt the C codecs under a different fingerprint).
test: fixtures
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: fixtures
	$(CARGO) bench -p tessera --bench media
	./benches/render-vs-ffmpeg.sh 20

clean-fixtures:
	rm -rf $(FIXTURES)

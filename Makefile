# The two commands of the README. Both install the native libraries on first use
# (tools/setup-native.sh, cached outside the clone) and build in release mode, so one build
# serves the demo and the tests. The build makes two executables: `vqad` and `vqad-train`
# (the training stack, which `vqad` runs for training commands).
.PHONY: demo test build clean-cache

demo:
	@bash tools/with-native.sh cargo build --release --quiet
	@bash tools/with-native.sh "$${CARGO_TARGET_DIR:-target}/release/vqad" demo $(ARGS)

test:
	@bash tools/with-native.sh cargo test --release --no-fail-fast $(ARGS)
	@bash tools/with-native.sh bash tools/check-runtime-build.sh

build:
	@bash tools/with-native.sh cargo build --release

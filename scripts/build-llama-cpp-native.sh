#!/usr/bin/env bash
# Build llama.cpp natively for this machine (GGML_NATIVE: AVX-512 where the CPU has
# it; AMX off, which segfaulted on a Xeon VM) from the sources vendored in PyPI's
# llama-cpp-python source package: llama-server and llama-quantize, plus the
# converter (convert_hf_to_gguf.py with its gguf-py). For `phils bench runtimes`,
# never for the default tests. Cached: a second run only prints the folder.
#   bash scripts/build-llama-cpp-native.sh   # prints the folder (bin/, convert_hf_to_gguf.py, gguf-py/)
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${PHILS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phils/llama-cpp-native-$version}"
if [[ -x "$cache/bin/llama-server" && -x "$cache/bin/llama-quantize" && -f "$cache/convert_hf_to_gguf.py" ]]; then echo "$cache"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$work/build" --target llama-server llama-quantize -j "$(nproc)" >&2
mkdir -p "$cache.partial/bin"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-quantize" "$cache.partial/bin/"
cp "$src/convert_hf_to_gguf.py" "$cache.partial/"
cp -r "$src/gguf-py" "$cache.partial/gguf-py"
[[ -d "$src/conversion" ]] && cp -r "$src/conversion" "$cache.partial/conversion"  # the converter's own modules
rm -rf "$cache" && mv "$cache.partial" "$cache"
echo "$cache"

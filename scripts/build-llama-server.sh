#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp sources vendored in the
# llama-cpp-python source package on PyPI (no other network). Cached: a second
# run only prints the path.
#   bash scripts/build-llama-server.sh           # portable AVX2 build, for the adapter test;
#                                                # prints the binary's path on stdout
#   bash scripts/build-llama-server.sh --native  # built for this machine (AVX-512 where the CPU has it),
#                                                # with llama-quantize and the converter (convert_hf_to_gguf.py,
#                                                # gguf-py/), for `phils bench runtimes`; prints the folder
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
native=false; [[ "${1:-}" == "--native" ]] && native=true
if $native; then
    cache="${PHILS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phils/llama-cpp-native-$version}"
    done_marker="$cache/convert_hf_to_gguf.py"; printed="$cache"
    targets=(llama-server llama-quantize)
    # AMX off: the native build with AMX segfaulted on a Xeon VM (TESTING-FACTS).
    flags=(-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
else
    cache="${PHILS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phils/llama-server-$version}"
    done_marker="$cache/bin/llama-server"; printed="$done_marker"
    targets=(llama-server)
    # A portable AVX2 build: the native build segfaulted on AMX machines (TESTING-FACTS).
    flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
           -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
if [[ -e "$done_marker" ]]; then echo "$printed"; exit 0; fi
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then  # on these machines already
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >&2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${flags[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$work/build" --target "${targets[@]}" -j "$(nproc)" >&2
mkdir -p "$cache.partial/bin"
for target in "${targets[@]}"; do cp "$work/build/bin/$target" "$cache.partial/bin/"; done
if $native; then  # the converter and its own modules, for turning a checkpoint into GGUF
    cp -r "$src/gguf-py" "$cache.partial/gguf-py"
    [[ -d "$src/conversion" ]] && cp -r "$src/conversion" "$cache.partial/conversion"
    cp "$src/convert_hf_to_gguf.py" "$cache.partial/"  # last: its presence marks a finished build
fi
rm -rf "$cache" && mv "$cache.partial" "$cache"
echo "$printed"

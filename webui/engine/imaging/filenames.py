"""A1111's "Images filename pattern" and "Directory name pattern" (modules/images.py FilenameGenerator): [tags]
filled in from a picture's params, the result made safe to use as one file or folder name whatever the prompt.

Tags, as A1111 1.10: [seed] [seed_first] [seed_last] [steps] [cfg] [width] [height] [styles] [sampler]
[scheduler] [sampler_scheduler] [model_hash] [model_name] [date] [datetime] [datetime<Format>]
[datetime<Format><Time Zone>] [job_timestamp] [prompt] [prompt_no_styles] [prompt_spaces] [prompt_words]
[prompt_hash<n>] [negative_prompt_hash<n>] [full_prompt_hash<n>] [batch_number] [batch_size]
[generation_number] [hasprompt<word|default>...] [clip_skip] [denoising] [vae_filename] [image_hash<n>] [none];
and [negative_prompt] (ours: the negative prompt as [prompt] writes the prompt). A tag that is unknown, or that
has nothing to say (no params), stays in the name as written; a tag whose value is "not applicable" ([seed_last]
with a batch of one, [denoising] in txt2img) takes the literal text before it away with it, as A1111.

Safety, beyond A1111's (which replaces `#<>:"/\\|?*` and newlines, and trims spaces and dots): every control
character and lone surrogate is replaced too, every tag's value is sanitised (A1111 leaves [steps] or
[vae_filename] alone), folder names cannot be "." or ".." or start with a dot, and Windows' reserved names (CON,
NUL, COM1…) get a "_" in front.

Length: as A1111 1.10, each tag's text is cut at 128 characters (its --filenames-max-length default) and the
whole file name at the filesystem's limit (os.statvfs f_namemax: 255 on ext4, btrfs, APFS, NTFS). A1111 counts
characters there; here the cut is at that many UTF-8 bytes, which is what the kernel limits, so a prompt of
emoji cannot make a save fail; the counter and the extension are never cut."""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import string
from dataclasses import dataclass

log = logging.getLogger(__name__)

PART_MAX_CHARS = 128  # A1111's --filenames-max-length default: one tag's text
NAME_MAX_BYTES = 255  # when the filesystem does not say
PROMPT_WORDS = 8  # A1111's directories_max_prompt_words default
TIME_FORMAT = "%Y%m%d%H%M%S"  # A1111's [datetime] and [job_timestamp]

_INVALID = '#<>:"/\\|?*'
_BAD = {ord(c): "_" for c in _INVALID} | {c: "_" for c in (*range(32), *range(127, 160), 0x2028, 0x2029)} | {
    c: "_" for c in range(0xD800, 0xE000)}
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_SKIP = object()  # A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT
_tag = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)", re.S)
_tag_arg = re.compile(r"(.*)<([^>]*)>$", re.S)
_non_letters = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")


def sanitize_part(text, replace_spaces: bool = True) -> str | None:
    """A1111's sanitize_filename_part: one tag's text with no character a file name cannot hold, cut at
    PART_MAX_CHARS, no leading space, no trailing space or dot."""
    if text is None:
        return None
    text = str(text)
    if replace_spaces:
        text = text.replace(" ", "_")
    return text.translate(_BAD).lstrip(" ")[:PART_MAX_CHARS].rstrip(" .")


def clean(text: str) -> str:
    """A whole name: no character a file name cannot hold, no leading space or dot, no trailing space or dot
    (uncut: the caller cuts it to its room)."""
    return text.translate(_BAD).lstrip(" .").rstrip(" .")


def reserved(name: str) -> bool:
    """A name Windows will not create a file under, with any extension ("con", "NUL.png", "com1.txt")."""
    return name.split(".")[0].strip().upper() in _RESERVED


def cut_bytes(text: str, limit: int) -> str:
    """text cut to at most `limit` bytes of UTF-8, never inside a character."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:max(limit, 0)].decode("utf-8", "ignore")


def safe_name(text: str, limit: int = NAME_MAX_BYTES) -> str:
    """One folder name: clean(), at most `limit` bytes, not a reserved name; empty when nothing is left ("..")."""
    text = cut_bytes(clean(text), limit).rstrip(" .")
    return cut_bytes("_" + text, limit).rstrip(" .") if reserved(text) else text


def name_max(folder) -> int:
    """The longest file name, in bytes, the filesystem holding `folder` takes."""
    try:
        return min(os.statvfs(folder).f_namemax, NAME_MAX_BYTES) or NAME_MAX_BYTES
    except (AttributeError, OSError):  # no statvfs (Windows)
        return NAME_MAX_BYTES


@dataclass
class Naming:
    """What a saved picture's folder and file names are made from; all optional (a picture without params, an
    extras source with no infotext, is named by its counter alone)."""
    params: object = None  # its own GenerationParams: seed, prompt, steps… as its infotext records them
    settings: object = None  # Settings: the patterns and switches (None: the defaults)
    job: object = None  # the request it came from: batch size and count, for [seed_last], [batch_number]…
    index: int = 0  # its place in the job, from 0, as counted by the caller (the seeds say it better: _place)
    styles: object = None  # a StyleDatabase: [styles] and [prompt_no_styles] are read back off the prompt
    started: float | None = None  # the job's start (time.time()), for [job_timestamp]
    folders: bool = True  # False: straight into the folder given, whatever save_to_dirs says (A1111's extras
    # Batch from directory with an output folder)


class FilenameGenerator:
    """A1111's FilenameGenerator over one picture: `apply(pattern)` fills in the tags."""

    def __init__(self, naming: Naming, seed: int | None, image=None, today: datetime.date | None = None):
        self.naming, self.p, self.seed, self.image = naming, naming.params, seed, image
        self.prompt = None if self.p is None else self.p.prompt
        self.today = today
        self._styles = None

    def apply(self, pattern: str) -> str:
        out = ""
        for m in _tag.finditer(pattern or ""):
            text, tag = m.groups()
            if tag is None:
                out += text
                continue
            args = []
            while (arg := _tag_arg.match(tag)) is not None:
                tag, value = arg.groups()
                args.insert(0, value)
            function = TAGS.get(tag.lower())
            value = None
            if function is not None:
                try:
                    value = function(self, *args)
                except Exception:  # noqa: BLE001 - a bad tag argument keeps the tag, never fails the save
                    log.warning("cannot fill in [%s] in a file name", tag, exc_info=True)
            if value is _SKIP:
                continue
            out += text + (f"[{tag}]" if value is None else sanitize_part(value, replace_spaces=False))
        return out

    # the values the tags read
    def _job_seeds(self) -> tuple[int, int]:
        """(the job's first seed, its last): seeds count up through the job unless a variation strength keeps
        them all the same (rng.job_seeds)."""
        job = self.naming.job or self.p
        if self.p.subseed_strength:
            return self.seed, self.seed
        first = self.seed - self._place()
        return first, first + job.batch_size * job.n_iter - 1

    def _place(self) -> int:
        """Its place in the job, from 0: read off its seed (or variation seed) where the request fixed the first
        one, which stays right after a skipped batch; else the count of pictures kept before it."""
        job, p = self.naming.job, self.p
        if job is not None and p is not None:
            varied = bool(p.subseed_strength)
            mine, first = (p.subseed, job.subseed) if varied else (p.seed, job.seed)
            if first != -1 and 0 <= mine - first < job.batch_size * job.n_iter:
                return mine - first
        return self.naming.index

    def _batch_size(self) -> int:
        return (self.naming.job or self.p).batch_size

    def _n_iter(self) -> int:
        return (self.naming.job or self.p).n_iter

    def _style_parts(self) -> tuple[list[str], str]:
        """(the style names the prompt carries, the prompt without them)."""
        if self._styles is None:
            database = self.naming.styles
            if database is None or not self.prompt:
                self._styles = ([], self.prompt or "")
            else:
                names, prompt, _ = database.extract(self.prompt, self.p.negative_prompt)
                self._styles = (names, prompt)
        return self._styles

    def _scheduler(self) -> str:
        """A1111's get_scheduler_str: "Automatic" as the sampler's own default schedule, capitalised."""
        from ..samplers import find_sampler

        name = self.p.scheduler or "Automatic"
        if name == "Automatic":
            info = find_sampler(self.p.sampler_name)
            name = (info.options.get("scheduler") if info else None) or "Automatic"
        return name.capitalize()

    def _vae_filename(self) -> str:
        """A1111's: the external VAE's file name up to its first dot; "NoneType" for the checkpoint's own."""
        if not self.p.vae:
            return "NoneType"
        parts = os.path.basename(self.p.vae).split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]

    def _has_prompt(self, *args) -> str:
        lower, out = self.prompt.lower(), ""
        for arg in args:
            if arg:
                expected, _, default = arg.partition("|")
                out += expected.lower() if expected.lower() in lower else default
        return sanitize_part(out)

    def _datetime(self, *args) -> str:
        from zoneinfo import ZoneInfo

        fmt = args[0] if args and args[0] else TIME_FORMAT
        try:
            zone = ZoneInfo(args[1]) if len(args) > 1 else None
        except (ValueError, KeyError, OSError):  # an unknown zone: local time, as A1111
            zone = None
        now = datetime.datetime.now().astimezone(zone)
        try:
            return now.strftime(fmt)
        except (ValueError, TypeError):
            return now.strftime(TIME_FORMAT)

    def _clip_skip(self) -> int:
        """The clip skip used: the params' (infotext leaves out 1), else the setting (A1111 reads the setting)."""
        if self.p is not None:
            return self.p.clip_skip or 1
        return getattr(self.naming.settings, "CLIP_stop_at_last_layers", 1)

    def _job_timestamp(self) -> str:
        started = self.naming.started
        moment = datetime.datetime.fromtimestamp(started) if started else datetime.datetime.now()
        return moment.strftime(TIME_FORMAT)


def _hash(text: str, *args) -> str:
    length = int(args[0]) if args and args[0] else 8
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:length]


def _needs_p(function):
    """A tag that reads the picture's params: left as written when it has none."""
    return lambda g, *args: None if g.p is None else function(g, *args)


def _prompt_words(g) -> str:
    words = [w for w in _non_letters.split(g.prompt or "") if w] or ["empty"]
    return " ".join(words[:PROMPT_WORDS])


TAGS = {
    "seed": lambda g: "" if g.seed is None else g.seed,
    "seed_first": _needs_p(lambda g: g.seed if g._batch_size() == 1 else g._job_seeds()[0]),
    "seed_last": _needs_p(lambda g: _SKIP if g._batch_size() == 1 else g._job_seeds()[1]),
    "steps": _needs_p(lambda g: g.p.steps),
    "cfg": _needs_p(lambda g: g.p.cfg_scale),
    "width": lambda g: None if g.image is None else g.image.width,
    "height": lambda g: None if g.image is None else g.image.height,
    "styles": _needs_p(lambda g: ", ".join(g._style_parts()[0]) or "None"),
    "sampler": _needs_p(lambda g: g.p.sampler_name),
    "scheduler": _needs_p(lambda g: g._scheduler()),
    "sampler_scheduler": _needs_p(lambda g: f"{g.p.sampler_name} {g._scheduler()}"),
    "model_hash": _needs_p(lambda g: g.p.model_hash),
    "model_name": _needs_p(lambda g: g.p.model),
    "date": lambda g: (g.today or datetime.date.today()).isoformat(),
    "datetime": lambda g, *args: g._datetime(*args),
    "job_timestamp": lambda g: g._job_timestamp(),
    "prompt_hash": _needs_p(lambda g, *args: _hash(g.prompt, *args)),
    "negative_prompt_hash": _needs_p(lambda g, *args: _hash(g.p.negative_prompt, *args)),
    "full_prompt_hash": _needs_p(lambda g, *args: _hash(f"{g.prompt} {g.p.negative_prompt}", *args)),
    "prompt": _needs_p(lambda g: sanitize_part(g.prompt)),
    "prompt_no_styles": _needs_p(lambda g: g._style_parts()[1].strip().strip(",").strip()),
    "prompt_spaces": _needs_p(lambda g: g.prompt),
    "prompt_words": _prompt_words,
    "negative_prompt": _needs_p(lambda g: sanitize_part(g.p.negative_prompt)),
    "batch_number": _needs_p(lambda g: _SKIP if g._batch_size() == 1 else g._place() % g._batch_size() + 1),
    "batch_size": _needs_p(lambda g: g._batch_size()),
    "generation_number": _needs_p(
        lambda g: _SKIP if g._batch_size() == 1 and g._n_iter() == 1 else g._place() + 1),
    "hasprompt": _needs_p(lambda g, *args: g._has_prompt(*args)),
    "clip_skip": lambda g: g._clip_skip(),
    "denoising": _needs_p(lambda g: g.p.denoising_strength or _SKIP),
    "vae_filename": _needs_p(lambda g: g._vae_filename()),
    "image_hash": lambda g, *args: None if g.image is None else hashlib.sha256(g.image.tobytes()).hexdigest()[
        :int(args[0]) if args and args[0] else None],
    "none": lambda g: "",  # A1111's way to a name of the counter alone
}


def folder_parts(generator: FilenameGenerator, settings) -> list[str]:
    """The subfolders a picture goes in: none without save_to_dirs, else the directory pattern's (A1111's
    default "[prompt_words]" when it is empty), a "/" in the pattern's own text making a deeper folder."""
    if not (settings.save_to_dirs and generator.naming.folders):
        return []
    text = generator.apply(settings.directories_filename_pattern or "[prompt_words]")
    parts = [safe_name(part) for part in re.split(r"[/\\]", text)]
    return [part for part in parts if part]


def decoration(generator: FilenameGenerator, settings) -> str:
    """What follows the counter (or is the whole name without one): the file name pattern, by default [seed]
    ([seed]-[prompt_spaces] when pictures are not sorted into subfolders); nothing for a picture with no seed,
    as A1111's short file names."""
    if generator.seed is None:
        return ""
    default = "[seed]" if settings.save_to_dirs else "[seed]-[prompt_spaces]"
    return clean(generator.apply(settings.samples_filename_pattern or default))


def file_name(decoration_text: str, suffix: str, limit: int, counter: int | None, retry: int = 0) -> str:
    """NNNNN-DECORATION.suffix (counter given) or DECORATION[-retry].suffix, the decoration cut so the whole name
    fits in `limit` bytes."""
    head = "" if counter is None else f"{counter:05d}"
    tail = (f"-{retry}" if retry else "") + f".{suffix}"
    if counter is not None and decoration_text:
        head += "-"
    room = limit - len(head.encode()) - len(tail.encode())
    text = cut_bytes(decoration_text, room).rstrip(" .")
    if counter is not None and not text:
        head = head.rstrip("-")
    elif counter is None and reserved(text):
        text = cut_bytes("_" + text, room).rstrip(" .")
    return f"{head}{text}{tail}"

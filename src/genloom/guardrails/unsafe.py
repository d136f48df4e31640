"""Unsafe content: violence, self-harm, sexual content, hate and illicit activity, each scored by
a small linear classifier over word n-grams and keyword cues, sentence by sentence (a text
scores what its worst sentence scores).

Keywords per category mark the harmful words ("stab", "overdose", "exterminate") and, apart,
their harmless uses ("kill the process", "breast cancer screening", "crack an egg"); both are
features the classifier weighs, not rules that decide. The weights (models/unsafe.npz, with
unsafe.json: settings, per-category thresholds, the training data's hash and held-out figures)
come from tools/guardrails/train_unsafe.py on the set tools/guardrails/build_unsafe_data.py
generates. Inference is numpy and dictionary look-ups: no model call, a few hundred µs at most.

Self-harm includes help-seeking ("I keep wanting to hurt myself, how do I get help"): it is
scored as self_harm, and its finding carries a HELP_SEEKING span so that a policy can answer
with support rather than a refusal."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from genloom.guardrails.normalize import normalize
from genloom.guardrails.scan import Finding, Span

CATEGORIES = ("violence", "self_harm", "sexual", "hate", "illicit")
_SELF_HARM = CATEGORIES.index("self_harm")
MODEL_DIR = Path(__file__).parent / "models"



def _words(spec: str) -> frozenset[str]:
    """Words and phrases separated by commas; "kill*" stands for kill, kills, killed, killing."""
    out = set()
    for item in spec.split(","):
        item = " ".join(item.split())
        if item.endswith("*"):
            stem = item[:-1]
            out.update({stem, stem + "s", stem + "ed", stem + "ing", stem + "er", stem + "ers"})
        elif item:
            out.add(item)
    return frozenset(out)


# Words and phrases (up to three words) that mark a category, and apart those that use such
# words harmlessly. Both are features the classifier weighs, looked up per sentence in a set.
KEYWORDS: dict[str, frozenset[str]] = {c: _words(spec) for c, spec in {
    "violence": "kill*, murder*, stab, stabs, stabbed, stabbing, shoot, shoots, shooting, shot, strangle, strangled, "
                "strangling, choke, choked, choking, slit, behead*, massacre, slaughter*, torture, tortured, torturing, "
                "dismember*, bloodbath, hitman, gore, gory, maim*, bleed, bleeding, blood, beat up, beaten up, "
                "beat him up, beat her up, to death, attack*, hurt him, hurt her, hurt them, hurt someone, hurt people, "
                "run over, poison*, break the legs, smash*, bomb, bombs, bombing, explosive, explosives",
    "self_harm": "kill myself, kill yourself, kill herself, kill himself, end my life, end it all, ending my life, suicide, "
                 "suicidal, self harm, self-harm, selfharm, cut myself, cutting myself, cut himself, cut herself, "
                 "cutting himself, cutting herself, my wrists, my arms, the cuts, overdose*, want to die, wanting to die, "
                 "off without me, take all the, lethal, lethal dose, bleed out, hang myself, starve myself, "
                 "starving myself, purging, purge, throw up after, never wake up, goodbye letters, painless way, "
                 "hurt myself, hurt himself, hurt herself, end it, to die, die",
    "sexual": "sex, sexual, sexually, sexy, sext, sexting, porn, porno, pornography, nude, nudes, naked, erotic, erotica, "
              "horny, orgasm, orgasms, masturbate, masturbating, masturbation, blowjob, threesome, bondage, fetish, "
              "stripper, undress, undressing, escort, genitals, talk dirty, dirty talk, dirty story, steamy, deepfake, "
              "in bed, sleep with, oral sex, explicit",
    "hate": "vermin, parasite, parasites, subhuman, cockroach, cockroaches, savage, savages, mongrel, mongrels, "
            "inferior, exterminate, exterminated, extermination, deport, deported, deportation, genocide, master race, "
            "replace us, less than human, scum, filth, disgust, disgusting, rats, plague",
    "illicit": "meth, crystal meth, crack, cocaine, heroin, fentanyl, mdma, lsd, ketamine, ghb, dmt, oxy, dark web, "
               "darkweb, dealer, ransomware, keylogger, trojan, botnet, rootkit, spyware, phishing, launder, laundering, "
               "counterfeit, forge, fake id, fake ids, stolen, shoplift*, hotwire, smuggle*, pipe bomb, ghost gun, "
               "silencer, molotov, untraceable, serial number, background check, hack into, hacking into, getting caught, "
               "being seen, being caught, without them knowing, without anyone knowing, bribe, steal*, break into, "
               "synthesize, cook meth, explosive, explosives, bomb, fraud, ponzi, clone, without getting caught",
}.items()}
HARMLESS: dict[str, frozenset[str]] = {c: _words(spec) for c, spec in {
    "violence": "process, processes, pid, zombie process, container, daemon, thread, pod, oom, oom killer, sigkill, "
                "sigterm, kill 9, kill switch, killer app, killer feature, port, linux, terminal, photo, photos, picture, "
                "hoops, photo shoot, photoshoot, film, movie, novel, mystery, murder mystery, killed it, killing it, "
                "killing me, kill for a, could murder a, stab at, self defense, self-defense, two birds, boss fight, "
                "world war, battle of, stay safe, game, chess, history, recipe, eggs, the eggs, execute the",
    "self_harm": "died laughing, die of embarrassment, dying to, battery died, killing me, kill for a, suicide squad, "
                 "suicide squeeze, hair, onion, carrot, steak, bread, cake, tomatoes, potatoes, safe dose, daily dose, "
                 "side effects, while pregnant, with food, headache, movie, song, chess, prevention",
    "sexual": "breast cancer, breastfeeding, breast milk, chicken breast, sex education, sexual harassment, sexual health, "
              "sexual orientation, age of consent, male or female, essex, sussex, master-slave, master slave, wires, "
              "nude color, rugby, rooster, hpv, prostate, screening, policy, report, consent, health class",
    "hate": "history of, discrimination, discrimination against, hate crimes, hate crime, antisemitism, racism, racist, "
            "stereotype, stereotypes, stereotyping, heritage month, celebrate, celebrating, i hate mondays, cilantro, "
            "traffic, package, aquarium, garage, duplicates, friends, bot, server, team",
    "illicit": "crack an egg, crack the egg, eggs, egg, hack together, from hackers, report a phishing, report phishing, "
               "my class, security class, my exam, legally, legal, breaking bad, heist, movies, weed killer, "
               "gun safety, two-factor, penalty, crime novel, novel, ocean's eleven, file my taxes, crack the code, "
               "soap, rice, vanilla, beer, hunting",
}.items()}
_GROUPS = _words(
    "immigrant, immigrants, muslim, muslims, jew, jews, jewish people, black people, blacks, mexican, mexicans, gay, "
    "gays, gay people, lesbian, lesbians, trans people, trans women, transgender, women, asian, asians, christian, "
    "christians, disabled people, refugee, refugees, arab, arabs, hindu, hindus, roma, african, africans, chinese people, "
    "latino, latinos, atheist, atheists, whites, white people")
_HOSTILE = _words(
    "hate, can't stand, cant stand, ban, banned, get rid of, deport, deported, stupid, lazy, criminal, criminals, worst, "
    "shouldn't be allowed, should not be, not be allowed, are all, nothing but, naturally, genetically, too stupid, "
    "control the, plotting, behind every, never hire, never rent, don't hire, kill all, burn down, war against, "
    "wiped out, out of my, keep")
_HELP = _words(
    "get help, want help, need help, support, hotline, talk to, who can i, what should i, can i help, how can i, "
    "i stop, stop thinking, therapist, counselor, counselling, counseling, crisis line, help him, help her")
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_SENTENCES = re.compile(r"[.!?]+\s+|\n+")


def sentences(text: str) -> list[tuple[int, int]]:
    """Offsets of the text's sentences (lines and sentence ends, the end marks left out), short
    pieces kept with the next."""
    out, start = [], 0
    for m in _SENTENCES.finditer(text):
        if m.start() - start >= 12:
            out.append((start, m.start()))
            start = m.end()
    if start < len(text) or not out:
        out.append((start, len(text)))
    return out


_LEXICONS = (*KEYWORDS.values(), *HARMLESS.values(), _GROUPS, _HOSTILE, _HELP)
assert all(len(p.split()) <= 3 for lex in _LEXICONS for p in lex), "lexicon phrases are at most three words"
# The first two words of every three-word phrase: triples are built only when one occurs.
_TRIPLE_HEADS = frozenset(" ".join(p.split()[:2]) for lex in _LEXICONS for p in lex if len(p.split()) == 3)


def _grams(words: list[str]) -> tuple[set[str], list[str]]:
    """The words, word pairs and (where a lexicon needs them) word triples of a sentence."""
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:])]
    grams = {*words, *pairs}
    if not _TRIPLE_HEADS.isdisjoint(pairs):
        grams.update(f"{p} {c}" for p, c in zip(pairs, words[2:]))
    return grams, pairs


def features(sentence: str) -> list[str]:
    """The features of one lower-cased sentence: words, word pairs, and keyword cues."""
    words = _WORD.findall(sentence)
    grams, pairs = _grams(words)
    feats = words + pairs
    for c in CATEGORIES:
        if not KEYWORDS[c].isdisjoint(grams):
            feats.append(f"kw:{c}")
        if not HARMLESS[c].isdisjoint(grams):
            feats.append(f"ok:{c}")
    if not _GROUPS.isdisjoint(grams):
        feats.append("group")
        if not _HOSTILE.isdisjoint(grams):
            feats.append("group+hostile")
    return feats


def help_seeking(sentence: str) -> bool:
    return not _HELP.isdisjoint(_grams(_WORD.findall(sentence))[0])


def wordpieces(word: str, vocab: dict[str, int]) -> list[int]:
    """BERT's greedy longest-match-first WordPiece split of one lower-case word; [] when a piece
    is missing (BERT's [UNK])."""
    if word in vocab:
        return [vocab[word]]
    ids, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                start = end
                break
        else:
            return []
    return ids


@dataclass
class UnsafeModel:
    """Weights for the sparse features; optionally (train_unsafe.py --embeddings, off in the
    shipped model) also, per WordPiece token of all-MiniLM-L6-v2's vocabulary, the classifier's
    weights for that token's input embedding projected to the categories, so that a sentence's
    embedding feature is the mean of its tokens' rows: a lookup, no model call."""

    index: dict[str, int]
    weights: np.ndarray  # (features, categories)
    bias: np.ndarray  # (categories,)
    scale: np.ndarray  # Platt calibration: p = sigmoid(scale * z + shift)
    shift: np.ndarray
    thresholds: dict[str, float]
    meta: dict
    pieces: dict[str, int] | None = None  # WordPiece token -> row of piece_weights
    piece_weights: np.ndarray | None = None  # (tokens, categories)

    def __post_init__(self) -> None:
        self._word_ids: dict[str, list[int]] = {}

    @classmethod
    def load(cls, directory: Path = MODEL_DIR) -> UnsafeModel:
        with np.load(directory / "unsafe.npz") as z:
            vocab = bytes(z["vocab"]).decode("utf-8").split("\n")
            weights = z["weights"].astype(np.float32)
            bias, scale, shift = (z[k].astype(np.float32) for k in ("bias", "scale", "shift"))
            pieces = bytes(z["pieces"]).decode("utf-8").split("\n") if "pieces" in z else None
            piece_weights = z["piece_weights"].astype(np.float32) if "piece_weights" in z else None
        meta = json.loads((directory / "unsafe.json").read_text())
        return cls({f: i for i, f in enumerate(vocab)}, weights, bias, scale, shift, meta["thresholds"], meta,
                   {p: i for i, p in enumerate(pieces)} if pieces is not None else None, piece_weights)

    def piece_ids(self, words: list[str]) -> list[int]:
        ids: list[int] = []
        for word in words:
            known = self._word_ids.get(word)
            if known is None:
                known = [] if self.pieces is None else [i for part in word.split("'") for i in wordpieces(part, self.pieces)]
                if len(self._word_ids) < 100_000:  # a bounded cache: words repeat across requests
                    self._word_ids[word] = known
            ids.extend(known)
        return ids

    def probabilities(self, sentences: list[str]) -> np.ndarray:
        """Calibrated scores, one row per sentence: every sentence's feature weights gathered in one
        index and summed per sentence with one reduceat."""
        idx: list[int] = []
        starts: list[int] = []
        piece_idx: list[int] = []
        piece_starts: list[int] = []
        for sentence in sentences:
            starts.append(len(idx))
            idx.extend(i for i in map(self.index.get, set(features(sentence))) if i is not None)
            if self.piece_weights is not None:
                piece_starts.append(len(piece_idx))
                piece_idx.extend(self.piece_ids(_WORD.findall(sentence)))
        z = _segment_sums(self.weights, idx, starts) + self.bias
        if self.piece_weights is not None:
            counts = np.diff(np.array(piece_starts + [len(piece_idx)]))
            z += _segment_sums(self.piece_weights, piece_idx, piece_starts) / np.maximum(counts, 1)[:, None]
        return 1.0 / (1.0 + np.exp(-(self.scale * z + self.shift)))


def _segment_sums(table: np.ndarray, idx: list[int], starts: list[int]) -> np.ndarray:
    """Row sums of table[idx] for each segment idx[starts[k]:starts[k + 1]] (empty segments: 0)."""
    if len(starts) == 1:
        return table[idx].sum(axis=0, keepdims=True)
    out = np.zeros((len(starts), table.shape[1]), dtype=np.float32)
    ends = starts[1:] + [len(idx)]
    nonempty = [k for k in range(len(starts)) if ends[k] > starts[k]]
    if nonempty:
        out[nonempty] = np.add.reduceat(table[idx], [starts[k] for k in nonempty], axis=0)
    return out


@cache
def builtin_model() -> UnsafeModel:
    return UnsafeModel.load()


class UnsafeScanner:
    name = "unsafe"
    categories = CATEGORIES

    def __init__(self, *, model: UnsafeModel | None = None) -> None:
        self.model = model if model is not None else builtin_model()
        self.thresholds = dict(self.model.thresholds)  # read by the policy engine as calibrated defaults
        self._thresholds = np.array([self.thresholds[c] for c in CATEGORIES], dtype=np.float32)

    def scores(self, text: str) -> dict[str, float]:
        return {f.category: f.score for f in self.scan(text)}

    def scan(self, text: str) -> list[Finding]:
        plain = normalize(text)
        same = len(plain) == len(text)  # spans can point into the original text
        lower = plain.lower()
        bounds = sentences(lower)
        texts = [lower[start:end] for start, end in bounds]
        probs = self.model.probabilities(texts)
        best = probs.max(axis=0).tolist()
        spans: list[list[Span]] = [[] for _ in CATEGORIES]
        labels = [c.upper() for c in CATEGORIES]
        if best[_SELF_HARM] >= self.thresholds["self_harm"] and help_seeking(lower):
            labels[_SELF_HARM] = "HELP_SEEKING"
        for k, i in np.argwhere(probs >= self._thresholds):
            spans[i].append(Span(*(bounds[k] if same else (0, len(text))), labels[i]))
        return [Finding(self.name, c, round(best[i], 4), tuple(spans[i])) for i, c in enumerate(CATEGORIES)]

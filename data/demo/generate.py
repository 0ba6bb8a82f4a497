#!/usr/bin/env python3
"""Deterministic generator of the tx demo corpus.

A synthetic language pair: English-like source -> "Veltan", an invented verb-final
language.  Every pair comes from one generation tree that is realized twice, once in
each word order, so the translation is a function of the source sentence and gold word
alignments fall out of the tree.

Veltan grammar, in short:
  * clauses are verb-final (S O V), also in relative, complement and adverbial clauses;
  * noun phrase: determiner noun adjective* numeral [postpositional phrase] [relative];
  * prepositions become postpositions ("in the house" -> "le drulitrun ni");
  * three genders (A, B, C) and two numbers; determiners, adjectives and relative
    pronouns agree with the noun through a suffix; nouns mark the plural;
  * verbs agree with the subject in person and number and carry tense
    (present / past / future: "sees" / "saw" / "will see" are all one Veltan word);
  * negation is the particle "nu" right before the verb.

Usage:  python data/demo/generate.py [--out DIR] [--train N] [--valid N] [--test N]
Only the Python standard library is used; the output depends on nothing but the
arguments (fixed seeds, no hash-order dependence).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random

LEXICON_SEED = 20240611
CORPUS_SEED = 7
MIN_LEN, MAX_LEN = 3, 30

# --------------------------------------------------------------------------------------
# Source lexicon
# --------------------------------------------------------------------------------------
# Nouns by semantic class: P people, A animals, T things, F food, L places.
# "sg:pl" gives an irregular plural.
NOUNS = {
    "P": """man:men woman:women child:children boy girl teacher student doctor farmer king
            queen soldier baker sailor writer singer friend neighbor brother sister mother
            father uncle aunt driver painter hunter judge nurse guard thief:thieves
            wife:wives baby:babies lady:ladies prince princess:princesses pilot dancer
            merchant""",
    "A": """dog cat horse cow bird mouse:mice goose:geese wolf:wolves fox:foxes bear lion
            tiger rabbit snake frog goat pig monkey elephant donkey camel owl eagle spider
            bee ant chicken rat squirrel turtle whale shark duck parrot""",
    "T": """book letter key box:boxes cup plate knife:knives chair table bed door window
            lamp clock phone hat coat shoe bag ball toy picture map pen bottle basket rope
            stone stick coin flower tree feather car boat bicycle train ship wheel
            candle mirror bell blanket gift umbrella""",
    "F": """apple cake egg potato:potatoes tomato:tomatoes orange banana carrot
            sandwich:sandwiches cookie pie lemon onion pear cherry:cherries""",
    "L": """house garden park city:cities village forest river lake mountain school market
            shop church:churches castle bridge road street field farm kitchen room station
            beach:beaches island library:libraries hospital office""",
}

# Verbs: "base[:past]" (3sg and past derived unless given), grouped by frame.
# Transitive verbs list the noun classes their object may come from.
TRANSITIVE = """
see:saw PATFL | watch PA | find:found PATF | take:took TF | bring:brought TF |
carry TFA | buy:bought TF | sell:sold TF | eat:ate F | wash TA | open T | close T |
break:broke T | fix T | paint TL | visit PL | help PA | love PAL | like PATFL |
hate PAF | follow PA | chase PA | catch:caught AT | hold:held TFA | throw:threw TF |
drop:dropped TF | pull TA | push T | touch PATF | kick T | feed:fed PA | call PA |
meet:met P | know:knew PL | remember PL | forget:forgot PL | leave:left LT |
hide:hid TF | steal:stole TF | draw:drew PATL | lose:lost T | protect PAL |
teach:taught P | kiss PA | bite:bit PAF | smell FTA | hear:heard PA | want TF |
need PT | choose:chose TF | count PATF | greet P | thank P | ask P | admire PAL |
fear PA | miss PL | burn T | fill T | move T | lift TA | share TF | keep:kept TFA |
send:sent T | borrow T | order FT | destroy TL | save PA | describe PATL |
wake:woke PA | examine PAT | climb TL
"""
INTRANSITIVE = """sleep:slept run:ran walk swim:swam sing:sang dance laugh cry smile wait
                  arrive sit:sat stand:stood fall:fell jump play work shout rest travel
                  listen cough fly:flew hurry sneeze yawn whisper return"""
# Verbs taking a "that"-clause (know/remember/forget/hear also take an object).
CLAUSAL = "say:said think:thought believe hope feel:felt notice explain dream know remember forget hear"

# Adjectives: "a" = only for people/animals, "t" = only for things/food/places,
# "x" = for anything.
ADJECTIVES = {
    "a": """happy sad angry tired hungry brave kind cruel clever lazy busy proud shy
            friendly sick lucky calm gentle rich poor""",
    "t": "empty full soft hard sweet bright",
    "x": """big small old young new red blue green black white yellow brown quiet loud fast
            slow tall short long heavy warm cold hot dry wet clean dirty beautiful ugly
            strong weak strange famous dangerous huge tiny dark wild""",
}
LOCATIVE = "in on under near behind beside at".split()   # PPs allowed with "be"
COPULA_ADVERBS = "often always sometimes again here there today yesterday tomorrow now".split()
# Adverbs, with the tense they require (None = any).
ADVERBS = [
    ("quickly", None), ("slowly", None), ("quietly", None), ("loudly", None),
    ("carefully", None), ("happily", None), ("sadly", None), ("often", None),
    ("always", None), ("sometimes", None), ("again", None), ("together", None),
    ("alone", None), ("here", None), ("there", None), ("today", None),
    ("yesterday", "past"), ("tomorrow", "fut"), ("now", "pres"), ("early", None),
]
VP_PREPOSITIONS = """in on under near behind to from into across through over around at
                     without beside toward along above below""".split()
NP_PREPOSITIONS = ["of", "with"]          # only inside noun phrases (avoids attachment ambiguity)
NUMBERS = "one two three four five six seven eight nine ten".split()
COORD = ["and", "but", "or", "so"]
SUBORD = ["because", "when", "while", "if", "although", "before", "after", "until"]

# pronoun -> (person/number, gender for agreement of predicative adjectives, object form)
PRONOUNS = {
    "i": ("1sg", "A", "me"), "you": ("2", "A", "you"), "he": ("3sg", "A", "him"),
    "she": ("3sg", "B", "her"), "it": ("3sg", "C", "it"), "we": ("1pl", "A", "us"),
    "they": ("3pl", "A", "them"),
}
POSSESSIVES = ["my", "your", "his", "her", "its", "our", "their"]

# --------------------------------------------------------------------------------------
# Target (Veltan) function words, written by hand
# --------------------------------------------------------------------------------------
# Agreement suffix by (gender, number) for determiners, adjectives, relative pronouns.
AGR = {("A", "sg"): "o", ("A", "pl"): "oi", ("B", "sg"): "a", ("B", "pl"): "an",
       ("C", "sg"): "e", ("C", "pl"): "en"}
NOUN_PLURAL = {"A": "i", "B": "e", "C": "u"}
TENSE_SUFFIX = {"pres": "", "past": "ri", "fut": "sa"}
PERSON_SUFFIX = {"1sg": "m", "2": "s", "3sg": "t", "1pl": "mus", "3pl": "nt"}
DET_STEMS = {"the": "l", "a": "un", "an": "un", "this": "kes", "these": "kes",
             "every": "ogn", "some": "alk", "many": "mult",
             "my": "nim", "your": "tev", "his": "sol", "her": "sel", "its": "sot",
             "our": "nos", "their": "lor"}
REL_SUBJ_STEM, REL_OBJ_STEM = "id", "ub"     # "the dog that sees" / "the dog that i see"
COMPLEMENTIZER = "ke"
NEGATION = "nu"
COPULA_STEM = "esa"
T_PRONOUN_SUBJ = {"i": "ek", "you": "sen", "he": "ol", "she": "ela", "it": "ot",
                  "we": "biz", "they": "onar"}
T_PRONOUN_OBJ = {"me": "eki", "you": "seni", "him": "olu", "her": "elu", "it": "otu",
                 "us": "bizi", "them": "onari"}
T_NUMBERS = dict(zip(NUMBERS, "ain dua tiri kvar pem ses sap okt nev des".split()))
T_CONJ = {"and": "ta", "but": "mak", "or": "vel", "so": "dan", "because": "zeki",
          "when": "kam", "while": "dum", "if": "ha", "although": "obva", "before": "prem",
          "after": "posk", "until": "dok"}
T_POSTP = dict(zip(VP_PREPOSITIONS + NP_PREPOSITIONS,
                   """ni pa sub pres hin ad ab inta tra per sor kir ap sin bes vers lun sup
                      inf vo kon""".split()))


# --------------------------------------------------------------------------------------
# Source morphology
# --------------------------------------------------------------------------------------
def _plural(w: str) -> str:
    if w.endswith(("s", "x", "ch", "sh")):
        return w + "es"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def _third(w: str) -> str:
    if w.endswith(("s", "x", "ch", "sh", "o")):
        return w + "es"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def _past(w: str) -> str:
    if w.endswith("e"):
        return w + "d"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ied"
    return w + "ed"


class Noun:
    def __init__(self, sg, pl, cls):
        self.sg, self.pl, self.cls = sg, pl, cls
        self.animate = cls in "PA"
        self.gender = self.stem = None

    def form(self, number):
        return self.sg if number == "sg" else self.pl


class Verb:
    def __init__(self, base, past, frames, objcls=""):
        self.base, self.past, self.third = base, past, _third(base)
        self.frames, self.objcls = frames, objcls
        self.stem = None


class Adjective:
    def __init__(self, word, kind):
        self.word, self.kind, self.stem = word, kind, None


class Lexicon:
    def __init__(self):
        self.nouns = []
        for cls, text in NOUNS.items():
            for item in text.split():
                sg, _, pl = item.partition(":")
                self.nouns.append(Noun(sg, pl or _plural(sg), cls))
        verbs: dict[str, Verb] = {}

        def add(item, frame, objcls=""):
            base, _, past = item.partition(":")
            v = verbs.get(base)
            if v is None:
                v = verbs[base] = Verb(base, past or _past(base), [], "")
            v.frames.append(frame)
            if objcls:
                v.objcls = objcls
        for entry in TRANSITIVE.split("|"):
            item, objcls = entry.split()
            add(item, "trans", objcls)
        for item in INTRANSITIVE.split():
            add(item, "intr")
        for item in CLAUSAL.split():
            add(item, "comp")
        self.verbs = list(verbs.values())
        self.adjs = [Adjective(w, k) for k, text in ADJECTIVES.items() for w in text.split()]
        self.copula = Verb("be", "was", ["cop"])
        self.copula.stem = COPULA_STEM
        self._check_source()
        self._make_target(random.Random(LEXICON_SEED))
        self.by_frame = {f: [v for v in self.verbs if f in v.frames] for f in ("trans", "intr", "comp")}
        self.animate_nouns = [n for n in self.nouns if n.animate]
        self.nouns_by_cls = {c: [n for n in self.nouns if n.cls == c] for c in NOUNS}
        self.adj_animate = [a for a in self.adjs if a.kind in "ax"]
        self.adj_inanimate = [a for a in self.adjs if a.kind in "tx"]

    def source_words(self):
        """Every source word form with its category (for ambiguity checks)."""
        out = []
        for n in self.nouns:
            out += [(n.sg, "noun"), (n.pl, "noun")]
        for v in self.verbs:
            out += [(v.base, "verb"), (v.third, "verb"), (v.past, "verb")]
        out += [(a.word, "adj") for a in self.adjs]
        out += [(a, "adv") for a, _ in ADVERBS]
        out += [(p, "prep") for p in VP_PREPOSITIONS + NP_PREPOSITIONS]
        out += [(w, "num") for w in NUMBERS]
        out += [(w, "conj") for w in COORD + SUBORD]
        out += [(w, "pron") for w in PRONOUNS] + [(v[2], "pron") for v in PRONOUNS.values()]
        out += [(w, "det") for w in DET_STEMS]
        out += [(w, "aux") for w in "am is are was were be will do does did not".split()]
        out += [("that", "that"), (".", "punct")]
        return out

    def _check_source(self):
        seen: dict[str, str] = {}
        for w, cat in self.source_words():
            if w in seen and seen[w] != cat and w != "her":   # her: possessive / object
                raise ValueError(f"source word {w!r} is both {seen[w]} and {cat}")
            seen[w] = cat
        self.source_vocab = sorted(seen)

    def _make_target(self, rng):
        used = set(self.source_vocab)
        function_words = (
            [s + a for s in set(DET_STEMS.values()) | {REL_SUBJ_STEM, REL_OBJ_STEM} for a in AGR.values()]
            + [COMPLEMENTIZER, NEGATION] + list(T_PRONOUN_SUBJ.values()) + list(T_PRONOUN_OBJ.values())
            + list(T_NUMBERS.values()) + list(T_CONJ.values()) + list(T_POSTP.values())
            + [COPULA_STEM + t + p for t in TENSE_SUFFIX.values() for p in PERSON_SUFFIX.values()])
        for w in function_words:
            if w in used:
                raise ValueError(f"function word {w!r} clashes")
            used.add(w)
        onsets = "b d f g k l m n p r s t v z br dr gr kr pl st tr sk".split()
        vowels = "a e i o u".split()
        codas = "k l m n r s t".split()

        def stem(nsyl, coda):
            s = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(nsyl))
            return s + (rng.choice(codas) if coda else "")

        def fresh(make, forms):
            while True:
                s = make()
                fs = forms(s)
                if len(set(fs)) == len(fs) and not any(f in used for f in fs):
                    used.update(fs)
                    return s
        for n in self.nouns:
            n.gender = rng.choices("ABC", weights=(4, 4, 3))[0]
            n.stem = fresh(lambda: stem(rng.choice((1, 2, 2, 2, 3)), True),
                           lambda s, g=n.gender: [s, s + NOUN_PLURAL[g]])
        for a in self.adjs:
            a.stem = fresh(lambda: stem(rng.choice((1, 2, 2)), True),
                           lambda s: [s + x for x in AGR.values()])
        for v in self.verbs:
            v.stem = fresh(lambda: stem(rng.choice((1, 2, 2, 3)), False),
                           lambda s: [s + t + p for t in TENSE_SUFFIX.values() for p in PERSON_SUFFIX.values()])
        self.adverbs = []
        for w, tense in ADVERBS:
            self.adverbs.append((w, tense, fresh(lambda: stem(2, False) + "l", lambda s: [s])))


# --------------------------------------------------------------------------------------
# Trees -> (source tokens, target tokens with alignment links)
# --------------------------------------------------------------------------------------
class Out:
    """Parallel realization: src is [(word, id)], tgt is [(word, [ids])]."""

    def __init__(self):
        self.ids = itertools.count()

    def s(self, word):
        return (word, next(self.ids))


def agr(gender, number):
    return AGR[(gender, number)]


class Gen:
    def __init__(self, lex: Lexicon, rng: random.Random):
        self.lex, self.rng = lex, rng

    # ---------------- noun phrases ----------------
    def noun_phrase(self, nouns, c, allow_mod=True):
        """Returns an NP dict; c in [0,1] scales optional material."""
        r = self.rng
        n = r.choice(nouns)
        number = "pl" if r.random() < 0.4 else "sg"
        if number == "sg":
            det = r.choices(["the", "a", "this", "every", "poss", "one"],
                            weights=(45, 25, 7, 4, 14, 5))[0]
        else:
            det = r.choices(["the", "these", "some", "many", "poss", None],
                            weights=(38, 8, 10, 7, 14, 23))[0]
        if det == "poss":
            det = r.choice(POSSESSIVES)
        num = None
        if det == "one":
            det, num = None, "one"
        elif number == "pl" and det in ("the", "these", None) + tuple(POSSESSIVES) and r.random() < 0.2:
            num = r.choice(NUMBERS[1:])
        adjs_pool = self.lex.adj_animate if n.animate else self.lex.adj_inanimate
        k = r.choices([0, 1, 2], weights=(60 - 30 * c, 30, 4 + 16 * c))[0]
        adjs = r.sample(adjs_pool, k)
        np = {"kind": "noun", "noun": n, "number": number, "det": det, "num": num,
              "adjs": adjs, "pp": None, "rel": None}
        if allow_mod:
            if r.random() < 0.05 + 0.15 * c:
                prep = r.choice(NP_PREPOSITIONS)
                pool = (self.lex.nouns_by_cls["P"] + self.lex.nouns_by_cls["A"] + self.lex.nouns_by_cls["L"]
                        if prep == "of" else
                        self.lex.nouns_by_cls["T"] + self.lex.nouns_by_cls["A"] + self.lex.nouns_by_cls["F"])
                np["pp"] = (prep, self.noun_phrase(pool, c * 0.5, allow_mod=False))
            if r.random() < 0.04 + 0.2 * c:
                np["rel"] = self.relative(np, c)
        return np

    def pronoun(self, case, allowed=None):
        r = self.rng
        pool = allowed or list(PRONOUNS)
        p = r.choice(pool)
        return {"kind": "pron", "pron": p, "case": case}

    def subject(self, c, animate=True):
        r = self.rng
        if r.random() < 0.3 - 0.15 * c:
            return self.pronoun("subj")
        nouns = self.lex.animate_nouns if animate else self.lex.nouns
        return self.noun_phrase(nouns, c)

    def relative(self, head, c):
        r = self.rng
        tense = self.tense()
        neg = r.random() < 0.08
        if head["noun"].animate and r.random() < 0.6:
            # subject relative: "the dog that sees the cat"
            frame = r.choices(["trans", "intr", "cop"], weights=(6, 3, 2))[0]
            rel = {"type": "subj", "frame": frame, "tense": tense, "neg": neg}
            if frame == "cop":
                rel["adj"] = r.choice(self.lex.adj_animate)
            else:
                rel["verb"] = r.choice(self.lex.by_frame[frame])
                if frame == "trans":
                    rel["obj"] = self.object(rel["verb"], c * 0.5, allow_mod=False)
        else:
            # object relative: "the cat that the dog sees"
            cands = [v for v in self.lex.by_frame["trans"] if head["noun"].cls in v.objcls]
            rel = {"type": "obj", "frame": "trans", "tense": tense, "neg": neg,
                   "verb": r.choice(cands)}
            if r.random() < 0.4:
                rel["subj"] = self.pronoun("subj")
            else:
                rel["subj"] = self.noun_phrase(self.lex.animate_nouns, c * 0.5, allow_mod=False)
        return rel

    def object(self, verb, c, allow_mod=True):
        r = self.rng
        if "P" in verb.objcls and r.random() < 0.12:
            return self.pronoun("obj")
        pool = [n for n in self.lex.nouns if n.cls in verb.objcls]
        return self.noun_phrase(pool, c, allow_mod)

    def tense(self):
        return self.rng.choices(["pres", "past", "fut"], weights=(40, 35, 25))[0]

    # ---------------- clauses ----------------
    def clause(self, c, allow_comp=True):
        r = self.rng
        w = {"intr": 25, "trans": 45, "cop": 15, "comp": 15 if allow_comp else 0}
        frame = r.choices(list(w), weights=list(w.values()))[0]
        cl = {"frame": frame, "tense": self.tense(), "neg": r.random() < 0.1,
              "pps": [], "adv": None}
        if frame == "cop":
            cl["subj"] = self.subject(c, animate=False)
            s = cl["subj"]
            animate = s["kind"] == "pron" or s["noun"].animate
            cl["adj"] = r.choice(self.lex.adj_animate if animate else self.lex.adj_inanimate)
        else:
            cl["subj"] = self.subject(c)
            cl["verb"] = r.choice(self.lex.by_frame[frame])
        if frame == "trans":
            cl["obj"] = self.object(cl["verb"], c)
        if frame == "comp":
            cl["comp"] = self.clause(c * 0.7, allow_comp=False)
        else:
            npp = r.choices([0, 1, 2], weights=(70 - 40 * c, 28, 2 + 12 * c))[0]
            if frame == "cop":
                npp = min(npp, 1)
            for _ in range(npp):
                prep = r.choice(LOCATIVE if frame == "cop" else VP_PREPOSITIONS)
                pool = self.lex.nouns_by_cls["L"] + self.lex.nouns_by_cls["T"]
                cl["pps"].append((prep, self.noun_phrase(pool, c * 0.5, allow_mod=False)))
            if r.random() < 0.25:
                cands = [a for a in self.lex.adverbs if a[1] in (None, cl["tense"])
                         and (frame != "cop" or a[0] in COPULA_ADVERBS)]
                cl["adv"] = r.choice(cands)
        return cl

    def sentence(self, c):
        r = self.rng
        s = {"first": self.clause(c), "conj": None}
        if r.random() < 0.1 + 0.6 * c:
            s["conj"] = r.choice(COORD + SUBORD)
            s["second"] = self.clause(c * 0.8)
        return s


class Realizer:
    def __init__(self):
        self.o = Out()

    # Each method returns (src, tgt).
    def np(self, np):
        o = self.o
        if np["kind"] == "pron":
            p = np["pron"]
            if np["case"] == "subj":
                w = o.s(p)
                return [w], [(T_PRONOUN_SUBJ[p], [w[1]])]
            objform = PRONOUNS[p][2]
            w = o.s(objform)
            return [w], [(T_PRONOUN_OBJ[objform], [w[1]])]
        n, number = np["noun"], np["number"]
        g = n.gender
        a = agr(g, number)
        src, tgt = [], []
        det_t = None
        if np["det"]:
            det = np["det"]
            if det == "a":
                first = np["adjs"][0].word if np["adjs"] else n.sg
                det = "an" if first[0] in "aeiou" else "a"
            if number == "pl" and det == "this":
                det = "these"
            if number == "sg" and det == "these":
                det = "this"
            w = o.s(det)
            src.append(w)
            det_t = (DET_STEMS[det] + a, [w[1]])
        num_t = None
        if np["num"]:
            w = o.s(np["num"])
            src.append(w)
            num_t = (T_NUMBERS[np["num"]], [w[1]])
        adj_t = []
        for adj in np["adjs"]:
            w = o.s(adj.word)
            src.append(w)
            adj_t.append((adj.stem + a, [w[1]]))
        w = o.s(n.form(number))
        src.append(w)
        noun_t = (n.stem + (NOUN_PLURAL[g] if number == "pl" else ""), [w[1]])
        tgt = ([det_t] if det_t else []) + [noun_t] + adj_t + ([num_t] if num_t else [])
        if np["pp"]:
            s2, t2 = self.pp(*np["pp"])
            src += s2
            tgt += t2
        if np["rel"]:
            s2, t2 = self.relative(np["rel"], g, number)
            src += s2
            tgt += t2
        return src, tgt

    def pp(self, prep, np):
        w = self.o.s(prep)
        s, t = self.np(np)
        return [w] + s, t + [(T_POSTP[prep], [w[1]])]

    @staticmethod
    def features(subj):
        """(person/number, gender, number) of a subject NP."""
        if subj["kind"] == "pron":
            pn, g, _ = PRONOUNS[subj["pron"]]
            return pn, g, ("pl" if pn in ("1pl", "3pl") else "sg")
        num = subj["number"]
        return ("3sg" if num == "sg" else "3pl"), subj["noun"].gender, num

    def verb_group(self, verb, frame, tense, neg, pn, pron):
        """Source verb group words and the target verb word (+ negation particle)."""
        o = self.o
        words = []   # source words aligned to the target verb form
        neg_w = None
        if frame == "cop":
            if tense == "fut":
                words.append(o.s("will"))
                if neg:
                    neg_w = o.s("not")
                words.append(o.s("be"))
            else:
                if tense == "pres":
                    form = "am" if pron == "i" else ("is" if pn == "3sg" else "are")
                else:
                    form = "was" if pn in ("1sg", "3sg") else "were"
                words.append(o.s(form))
                if neg:
                    neg_w = o.s("not")
            stem = COPULA_STEM
        else:
            if tense == "fut":
                words.append(o.s("will"))
                if neg:
                    neg_w = o.s("not")
                words.append(o.s(verb.base))
            elif neg:
                aux = "did" if tense == "past" else ("does" if pn == "3sg" else "do")
                words.append(o.s(aux))
                neg_w = o.s("not")
                words.append(o.s(verb.base))
            else:
                form = verb.past if tense == "past" else (verb.third if pn == "3sg" else verb.base)
                words.append(o.s(form))
            stem = verb.stem
        src = list(words)
        if neg_w:
            src.insert(len(src) - 1 if len(words) == 2 else 1, neg_w)
        tverb = (stem + TENSE_SUFFIX[tense] + PERSON_SUFFIX[pn], [w[1] for w in words])
        tgt = ([(NEGATION, [neg_w[1]])] if neg_w else []) + [tverb]
        return src, tgt

    def relative(self, rel, head_gender, head_number):
        o = self.o
        that = o.s("that")
        a = agr(head_gender, head_number)
        if rel["type"] == "subj":
            pn = "3sg" if head_number == "sg" else "3pl"
            vs, vt = self.verb_group(rel.get("verb"), rel["frame"], rel["tense"], rel["neg"], pn, None)
            src, mid = [that] + vs, []
            if rel["frame"] == "trans":
                s2, mid = self.np(rel["obj"])
                src += s2
            elif rel["frame"] == "cop":
                w = o.s(rel["adj"].word)
                src.append(w)
                mid = [(rel["adj"].stem + a, [w[1]])]
            tgt = [(REL_SUBJ_STEM + a, [that[1]])] + mid + vt
        else:
            ss, st = self.np(rel["subj"])
            pn, _, _ = self.features(rel["subj"])
            pron = rel["subj"].get("pron")
            vs, vt = self.verb_group(rel["verb"], "trans", rel["tense"], rel["neg"], pn, pron)
            src = [that] + ss + vs
            tgt = [(REL_OBJ_STEM + a, [that[1]])] + st + vt
        return src, tgt

    def clause(self, cl):
        o = self.o
        ss, st = self.np(cl["subj"])
        pn, g, number = self.features(cl["subj"])
        pron = cl["subj"].get("pron")
        vs, vt = self.verb_group(cl.get("verb"), cl["frame"], cl["tense"], cl["neg"], pn, pron)
        src, tgt = ss + vs, list(st)
        if cl["frame"] == "trans":
            s2, t2 = self.np(cl["obj"])
            src += s2
            tgt += t2
        elif cl["frame"] == "cop":
            w = o.s(cl["adj"].word)
            src.append(w)
            tgt.append((cl["adj"].stem + agr(g, number), [w[1]]))
        elif cl["frame"] == "comp":
            that = o.s("that")
            s2, t2 = self.clause(cl["comp"])
            src += [that] + s2
            tgt += [(COMPLEMENTIZER, [that[1]])] + t2
        for prep, np in cl["pps"]:
            s2, t2 = self.pp(prep, np)
            src += s2
            tgt += t2
        if cl["adv"]:
            w = o.s(cl["adv"][0])
            src.append(w)
            tgt.append((cl["adv"][2], [w[1]]))
        return src, tgt + vt

    def sentence(self, s):
        src, tgt = self.clause(s["first"])
        if s["conj"]:
            w = self.o.s(s["conj"])
            s2, t2 = self.clause(s["second"])
            src += [w] + s2
            tgt += [(T_CONJ[s["conj"]], [w[1]])] + t2
        w = self.o.s(".")
        src.append(w)
        tgt.append((".", [w[1]]))
        pos = {wid: i for i, (_, wid) in enumerate(src)}
        align = sorted({(pos[i], j) for j, (_, ids) in enumerate(tgt) for i in ids})
        return (" ".join(w for w, _ in src), " ".join(w for w, _ in tgt),
                " ".join(f"{i}-{j}" for i, j in align))


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------
def length_weights():
    """Target distribution of source lengths (words incl. the final '.')."""
    w = {}
    for L in range(MIN_LEN, MAX_LEN + 1):
        # rises linearly up to 10 words, then decays to a thin tail at 30 (mean ~13.5)
        w[L] = (L - 2) if L <= 10 else 8.0 * ((MAX_LEN + 2 - L) / (MAX_LEN + 2 - 10)) ** 1.5
    return w


def quotas(n):
    w = length_weights()
    total = sum(w.values())
    q = {L: int(n * x / total) for L, x in w.items()}
    # hand out the remainder to the largest fractional parts (ties: shorter first)
    rest = sorted(w, key=lambda L: (-(n * w[L] / total - q[L]), L))
    for L in rest[: n - sum(q.values())]:
        q[L] += 1
    return q


def generate_split(gen, n, seen, max_tries_factor=400):
    q = quotas(n)
    out = []
    r = gen.rng
    tries = 0
    open_lengths = [L for L in sorted(q) if q[L] > 0]
    while open_lengths:
        tries += 1
        if tries > max_tries_factor * n:
            raise RuntimeError(f"could not fill length quotas: {q}")
        target = r.choice(open_lengths)
        c = min(1.0, max(0.0, (target - 4) / 22.0))
        tree = gen.sentence(c)
        src, tgt, align = Realizer().sentence(tree)
        L = src.count(" ") + 1
        prev = seen.get(src)
        if prev is not None:
            if prev != tgt:
                raise AssertionError(f"source maps to two targets: {src!r}")
            continue
        if L not in q or q[L] == 0:
            continue
        seen[src] = tgt
        q[L] -= 1
        if q[L] == 0:
            open_lengths.remove(L)
        out.append((src, tgt, align))
    r.shuffle(out)
    return out


def generate(n_train=30000, n_valid=500, n_test=1000):
    """Returns {split: [(src, tgt, align)]}.  test and valid are drawn first, so they
    do not depend on n_train."""
    lex = Lexicon()
    gen = Gen(lex, random.Random(CORPUS_SEED))
    seen: dict[str, str] = {}
    splits = {}
    for name, n in (("test", n_test), ("valid", n_valid), ("train", n_train)):
        splits[name] = generate_split(gen, n, seen)
    return splits


def write(splits, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in splits.items():
        for ext, k in (("src", 0), ("tgt", 1)):
            with open(os.path.join(out_dir, f"{name}.{ext}"), "w", encoding="utf-8", newline="\n") as f:
                f.write("".join(row[k] + "\n" for row in rows))
    with open(os.path.join(out_dir, "test.align"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(row[2] + "\n" for row in splits["test"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="output folder (default: the folder of this script)")
    ap.add_argument("--train", type=int, default=30000)
    ap.add_argument("--valid", type=int, default=500)
    ap.add_argument("--test", type=int, default=1000)
    args = ap.parse_args(argv)
    splits = generate(args.train, args.valid, args.test)
    write(splits, args.out)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in
                ["train.src", "train.tgt", "valid.src", "valid.tgt", "test.src", "test.tgt", "test.align"])
    print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in splits.items())} pairs "
          f"to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

"""The special tokens every tokenizer kind reserves, at the same ids, so that the model and the
search never ask which kind of tokenizer they run on: <pad>=0, <unk>=1, <s>=2 (start),
</s>=3 (stop). Apart from tokenizer.py so that each kind (tokenizer.py's, sentencepiece's) can
import them without importing the other."""

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = [PAD, UNK, BOS, EOS]
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

"""saelab.cleaning: what clean_tweet restores, what it drops, and what it leaves alone."""

import pytest

from saelab.cleaning import clean_tweet
from saelab.tasks import load_task


@pytest.mark.parametrize(("raw", "clean"), [
    ("crazed &amp; drunk drivers", "crazed & drunk drivers"),
    ("fish &amp;amp; chips", "fish & chips"),                       # escaped twice
    ("the biggest story Iäó»ve ever broken", "the biggest story I've ever broken"),
    ("I donÕ¢_\x8aÎ_\x86¢t want either", "I don't want either"),
    ("VirginAmerica I\x8a\x97Èm having trouble", "VirginAmerica I'm having trouble"),
    ("äóì@spiritcap: flights", '"@spiritcap: flights'),
    ("Coachella2015 _ôÖ\x89_ôÖ\x89 #Coachella", "Coachella2015 #Coachella"),  # emoji debris: dropped
    ("nice  and   spaced\r\nlines", "nice and spaced\nlines"),
    ("a café on the corner", "a café on the corner"),             # a real accented letter stays
    ("plain text stays plain.", "plain text stays plain."),
])
def test_clean_tweet(raw, clean):
    assert clean_tweet(raw) == clean


def test_loaded_tweets_carry_no_entities_or_debris():
    task = load_task("tweet-sentiment")
    texts = task.train.texts + task.test.texts
    assert not [t for t in texts if "&amp;" in t or "&quot;" in t or "äó" in t or "Õ¢" in t]
    debris = [t for t in texts if any("\u0080" <= c <= "\u009f" for c in t)]  # C1 controls: never real text
    assert not debris, debris[:3]
    assert "clean_tweet" in task.source

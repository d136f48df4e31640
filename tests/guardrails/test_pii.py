"""The PII scanner finds each entity type with exact spans and rejects numbers that fail their
checksums; redaction numbers placeholders per request and the stream restorer puts values back
without ever emitting half a placeholder."""

from __future__ import annotations

import pytest

from genloom.guardrails.pii import ENTITIES, Placeholders, PiiScanner, redact
from genloom.guardrails.scan import Span

scanner = PiiScanner()


def found(text: str) -> list[tuple[str, str]]:
    return [(s.label, text[s.start:s.end]) for s in scanner.spans(text)]


@pytest.mark.parametrize("label, value", [
    ("EMAIL", "jane.doe+billing@mail.example.co.uk"),
    ("PHONE", "(555) 123-4567"),
    ("PHONE", "+1-206-269-0743x915"),
    ("PHONE", "+44(0)115 496 0914"),
    ("PHONE", "+49 30 1234 5678"),
    ("CREDIT_CARD", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "3782-822463-10005"),
    ("CREDIT_CARD", "6011000990139424"),
    ("IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "DE89370400440532013000"),
    ("IP_ADDRESS", "192.168.10.254"),
    ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("US_SSN", "219-45-6789"),
    ("UK_NINO", "AB 12 34 56 C"),
    ("CA_SIN", "698 538 790"),
    ("DE_TAX_ID", "86095742719"),
    ("ES_NIF", "04283962M"),
    ("ES_NIF", "X6259702E"),
    ("IT_FISCAL_CODE", "GLZMRN37A14L019L"),
])
def test_each_entity_type_is_found_with_its_exact_span(label, value):
    text = f"For the record, the value is {value}; thanks."
    assert found(text) == [(label, value)]


def test_names_are_found_by_cue_and_by_first_name_list():
    text = ("Dear Priya,\nI met Dr. Okonkwo and Karen Manning today; my name is Aurelio Pellegrini.\n\n"
            "Best regards,\nBram van der Post")
    assert [v for label, v in found(text) if label == "PERSON"] == [
        "Priya", "Okonkwo", "Karen Manning", "Aurelio Pellegrini", "Bram van der Post"]


def test_capitalised_words_that_are_not_people_are_left_alone():
    text = "Will Robots Take Our Jobs? We visited Victoria Station and the Charles River in May."
    assert found(text) == []


def test_addresses_join_street_city_state_and_zip():
    text = "Ship to 1600 Pennsylvania Avenue NW, Washington, DC 20500 or 221B Baker Street, London NW1 6XE today."
    assert found(text) == [("ADDRESS", "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
                           ("ADDRESS", "221B Baker Street, London NW1 6XE")]


def test_numbers_failing_their_checks_are_not_reported():
    text = ("card 4111 1111 1111 1112, iban GB82 WEST 1234 5698 7654 33, ssn 666-12-3456 and 123-00-4567 and "
            "900-12-3456, ip 256.1.1.1, tax id 86095742718, nif 04283962A, order 5913417776, version 1.2.3")
    assert found(text) == []


def test_a_bare_number_is_a_phone_only_after_a_cue_word():
    assert found("call me on 5913417776") == [("PHONE", "5913417776")]
    assert found("invoice 5913417776 is paid") == []


def test_scan_returns_one_finding_scored_by_whether_anything_was_found():
    [hit] = scanner.scan("write to ana@example.org")
    [miss] = scanner.scan("nothing personal here")
    assert (hit.scanner, hit.category, hit.score, hit.spans) == ("pii", "pii", 1.0, (Span(9, 24, "EMAIL"),))
    assert (miss.score, miss.spans) == (0.0, ())


def test_the_scanner_can_be_limited_to_some_entities():
    text = "ana@example.org, 192.168.0.1"
    assert [s.label for s in PiiScanner(entities=["IP_ADDRESS"]).spans(text)] == ["IP_ADDRESS"]
    with pytest.raises(ValueError, match="unknown PII entities"):
        PiiScanner(entities=["SHOE_SIZE"])
    assert "PERSON" in ENTITIES


def test_redaction_numbers_placeholders_consistently_across_the_texts_of_a_request():
    p = Placeholders()
    first = "Mail ana@example.org or bo@example.org, then ana@example.org again."
    second = "Forward to bo@example.org and call (555) 123-4567."
    r1 = redact(first, scanner.spans(first), p)
    r2 = redact(second, scanner.spans(second), p)
    assert r1 == "Mail <EMAIL_1> or <EMAIL_2>, then <EMAIL_1> again."
    assert r2 == "Forward to <EMAIL_2> and call <PHONE_1>."
    assert p.restore(r1) == first and p.restore(r2) == second
    assert p.restore("unknown <EMAIL_9> stays") == "unknown <EMAIL_9> stays"


def test_overlapping_spans_keep_the_longest():
    p = Placeholders()
    text = "id 4111 1111 1111 1111"
    spans = [Span(3, 7, "PHONE"), Span(3, 22, "CREDIT_CARD"), Span(8, 22, "SECRET")]
    assert redact(text, spans, p) == "id <CREDIT_CARD_1>"


def test_stream_restorer_holds_back_partial_placeholders_and_restores_split_values():
    p = Placeholders()
    redact("ana@example.org and (555) 123-4567", scanner.spans("ana@example.org and (555) 123-4567"), p)
    restorer = p.restorer()
    deltas = ["Sure, I wrote to <EM", "AIL_", "1> and rang <", "PHONE_1", ">. A < b and <b>bold</b>", " <EMAIL_1", ">"]
    emitted = [restorer.feed(d) for d in deltas]
    assert emitted[0] == "Sure, I wrote to " and emitted[1] == ""
    assert all("<EM" not in e and "<PH" not in e for e in emitted)
    assert "".join(emitted) + restorer.flush() == (
        "Sure, I wrote to ana@example.org and rang (555) 123-4567. A < b and <b>bold</b> ana@example.org")


def test_stream_restorer_releases_what_cannot_be_a_placeholder():
    p = Placeholders()
    p.placeholder("EMAIL", "ana@example.org")
    restorer = p.restorer()
    assert restorer.feed("x <") == "x "
    assert restorer.feed("div>") == "<div>"
    assert restorer.feed("<EMAIL_2") == "<EMAIL_2"  # no such placeholder in this request
    assert restorer.feed(" end <EMAIL_") == " end "
    assert restorer.flush() == "<EMAIL_"

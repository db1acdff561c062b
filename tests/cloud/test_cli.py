"""`starfish cloud new-feed-epoch`: after restoring an older backup, every gate of the site resyncs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cloud.db import make_engine, make_sessionmaker
from cloud.deps import Principal, Role
from cloud.settings import Settings
from cloud.sites.service import create_site
from cloud.sync import feed
from starfish.cli import app

ADMIN = Principal(role=Role.ADMIN, subject_id=1, name="admin")


def test_new_feed_epoch_restarts_the_named_sites_feeds_and_refuses_unknown_sites(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARFISH_ENVIRONMENT", "development")
    monkeypatch.setenv("STARFISH_DATABASE_URL", settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    with factory() as session:
        sites = [create_site(session, ADMIN, code, code.title(), "Asia/Shanghai").id for code in ("nanshan", "wanlong")]
        session.commit()
        feed.ensure_key_sets(session, feed.trusted_key_set(settings))  # every site's feed gets its head row
        before = {site_id: feed.head(session, site_id) for site_id in sites}

    result = CliRunner().invoke(app, ["cloud", "new-feed-epoch", "--site", "nanshan"])

    assert result.exit_code == 0, result.output
    with factory() as session:
        after = {site_id: feed.head(session, site_id) for site_id in sites}
    nanshan, wanlong = sites
    assert after[nanshan][0] == before[nanshan][0], "the sequence goes on; only its run is renamed"
    assert after[nanshan][1] != before[nanshan][1] and after[nanshan][1] in result.output
    assert after[wanlong] == before[wanlong], "other sites untouched"

    refused = CliRunner().invoke(app, ["cloud", "new-feed-epoch", "--site", "nowhere"])
    assert refused.exit_code == 2 and "no site nowhere" in refused.output
    engine.dispose()

"""A snapshot of the registry that answers "which version serves this request", with no I/O:
the gateway resolves every request against the current snapshot, and a change to the registry
replaces the snapshot as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field

from genloom.registry.rollout import Arm, RolloutRecord, RolloutStrategy, split
from genloom.registry.versions import PRODUCTION, ModelRef, ModelVersion, UnknownModel, VersionState, version_key


@dataclass(frozen=True)
class Resolution:
    """The version a request runs on. On a rollout's candidate arm, `stable` is the version that
    answers if the candidate fails before any output; `shadow` is a version to mirror it to."""

    key: str
    name: str
    rollout: str | None = None
    arm: Arm | None = None
    stable: str | None = None
    shadow: str | None = None


@dataclass(frozen=True)
class Catalog:
    versions: dict[str, ModelVersion] = field(default_factory=dict)  # by key, retired ones left out
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)  # {name: {alias: version}}
    rollouts: dict[str, RolloutRecord] = field(default_factory=dict)  # the active one per name

    def names(self) -> list[str]:
        return sorted({v.name for v in self.versions.values()})

    def known(self) -> list[str]:
        """What a client may ask for, for error messages: names, then versions and aliases."""
        refs = [*self.names(), *sorted(self.versions)]
        refs += [f"{name}@{alias}" for name, aliases in sorted(self.aliases.items()) for alias in sorted(aliases) if alias != PRODUCTION]
        return refs

    def version(self, ref: str) -> ModelVersion:
        """The version `ref` names, without splitting traffic (`name` is its production alias)."""
        parsed = ModelRef.parse(ref)
        if parsed.version is None:
            number = self.aliases.get(parsed.name, {}).get(parsed.alias or PRODUCTION)
            if number is None:
                raise UnknownModel(ref, self.known())
        else:
            number = parsed.version
        found = self.versions.get(version_key(parsed.name, number))
        if found is None:
            raise UnknownModel(ref, self.known())
        return found

    def resolve(self, ref: str, *, request_id: str, user: str | None = None, tenant: str = "default") -> Resolution:
        """The version for one request: an explicit `name@vN` or `name@alias` is taken as asked;
        a plain name is its production alias, split by the model's active rollout."""
        chosen = self.version(ref)
        owner = chosen.metadata.get("owner_tenant") if isinstance(chosen.metadata, dict) else None
        if owner is not None and owner != tenant and ModelRef.parse(ref).explicit:
            # A tenant's own fine-tuned version: only that tenant may name it (it was trained on its
            # data). Once an admin makes it a production or rollout target, the plain name serves it.
            raise UnknownModel(ref, self.known())
        rollout = self.rollouts.get(chosen.name)
        if rollout is None or ModelRef.parse(ref).explicit or chosen.version != rollout.stable:
            return Resolution(chosen.key, chosen.name)
        candidate = version_key(chosen.name, rollout.candidate)
        if candidate not in self.versions:  # retired or failed meanwhile: the stable version serves
            return Resolution(chosen.key, chosen.name)
        arm = split(rollout, request_id=request_id, user=user, tenant=tenant)
        if arm is Arm.STABLE:
            return Resolution(chosen.key, chosen.name, rollout.id, Arm.STABLE)
        if rollout.strategy is RolloutStrategy.SHADOW:
            return Resolution(chosen.key, chosen.name, rollout.id, Arm.STABLE, shadow=candidate)
        return Resolution(candidate, chosen.name, rollout.id, Arm.CANDIDATE, stable=chosen.key)


def serving(versions: list[ModelVersion]) -> dict[str, ModelVersion]:
    """The versions a process should hold: every one not retired."""
    return {v.key: v for v in versions if v.state is not VersionState.RETIRED}

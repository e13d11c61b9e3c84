/**
 * The FHIR R4 search parameters this server evaluates beyond `_id` and `_lastUpdated`: the ones
 * bulk clients send in `_typeFilter` (SPEC §12) and that CRUD search shares. Each is taken from
 * the R4 SearchParameter's expression (https://hl7.org/fhir/R4/searchparameter-registry.html),
 * as paths into the resource (lax jsonpath: a path through an array visits every item) with the
 * shape of the element found there:
 *
 * - token: `code` (a code/string primitive), `boolean`, `coding` (Coding), `concept`
 *   (CodeableConcept: its codings), `identifier` (Identifier: system + value);
 * - date: `point` (date, dateTime, instant) or `period` (Period: start … end);
 * - reference: Reference elements (`.reference`), optionally only those to one `target` type
 *   (Observation `patient` is `subject.where(resolve() is Patient)`);
 * - string: string elements (HumanName and Address params list their string parts).
 *
 * A parameter not listed here is refused by name (never ignored).
 */
export type TokenShape = 'code' | 'boolean' | 'coding' | 'concept' | 'identifier';

export type SearchParamDef =
  | { type: 'token'; paths: { path: string; shape: TokenShape }[] }
  | { type: 'date'; paths: { path: string; shape: 'point' | 'period' }[] }
  | { type: 'reference'; paths: string[]; target?: string }
  | { type: 'string'; paths: string[] };

const tok = (shape: TokenShape, ...paths: string[]): SearchParamDef => ({ type: 'token', paths: paths.map((path) => ({ path, shape })) });
const code = (...paths: string[]) => tok('code', ...paths);
const concept = (...paths: string[]) => tok('concept', ...paths);
const bool = (path: string) => tok('boolean', path);
const identifier = tok('identifier', 'identifier');
/** Points, plus `period:` paths. */
function date(points: string[], periods: string[] = []): SearchParamDef {
  return { type: 'date', paths: [...points.map((path) => ({ path, shape: 'point' as const })), ...periods.map((path) => ({ path, shape: 'period' as const }))] };
}
const ref = (path: string | string[], target?: string): SearchParamDef =>
  ({ type: 'reference', paths: Array.isArray(path) ? path : [path], ...(target ? { target } : {}) });
const str = (...paths: string[]): SearchParamDef => ({ type: 'string', paths });
const humanName = (base: string) => str(...['family', 'given', 'prefix', 'suffix', 'text'].map((p) => `${base}.${p}`));
const address = (base: string) => str(...['line', 'city', 'district', 'state', 'postalCode', 'country', 'text'].map((p) => `${base}.${p}`));

/** `subject` and `patient` (= subject that is a Patient), as most clinical types define them. */
const subject = { subject: ref('subject'), patient: ref('subject', 'Patient') };

const PARAMS: Record<string, Record<string, SearchParamDef>> = {
  AllergyIntolerance: {
    identifier, 'clinical-status': concept('clinicalStatus'), 'verification-status': concept('verificationStatus'),
    type: code('type'), category: code('category'), criticality: code('criticality'), code: concept('code', 'reaction.substance'),
    date: date(['recordedDate']), onset: date(['reaction.onset']), patient: ref('patient'), recorder: ref('recorder'), asserter: ref('asserter'),
  },
  CarePlan: {
    identifier, status: code('status'), intent: code('intent'), category: concept('category'), date: date([], ['period']), ...subject,
    encounter: ref('encounter'), 'care-team': ref('careTeam'), condition: ref('addresses'), 'activity-code': concept('activity.detail.code'),
  },
  CareTeam: { identifier, status: code('status'), category: concept('category'), date: date([], ['period']), ...subject, encounter: ref('encounter'), participant: ref('participant.member') },
  Claim: {
    identifier, status: code('status'), use: code('use'), priority: concept('priority'), created: date(['created']), patient: ref('patient'),
    provider: ref('provider'), insurer: ref('insurer'), encounter: ref('item.encounter'),
  },
  Communication: { identifier, status: code('status'), category: concept('category'), ...subject, sent: date(['sent']), received: date(['received']), encounter: ref('encounter') },
  Condition: {
    identifier, code: concept('code'), category: concept('category'), 'clinical-status': concept('clinicalStatus'),
    'verification-status': concept('verificationStatus'), severity: concept('severity'), 'body-site': concept('bodySite'),
    'onset-date': date(['onsetDateTime'], ['onsetPeriod']), 'abatement-date': date(['abatementDateTime'], ['abatementPeriod']),
    'recorded-date': date(['recordedDate']), ...subject, encounter: ref('encounter'), asserter: ref('asserter'),
  },
  Coverage: {
    identifier, status: code('status'), type: concept('type'), beneficiary: ref('beneficiary'), patient: ref('beneficiary'),
    subscriber: ref('subscriber'), payor: ref('payor'), 'policy-holder': ref('policyHolder'),
  },
  Device: { identifier, status: code('status'), type: concept('type'), patient: ref('patient'), organization: ref('owner'), 'device-name': str('deviceName.name'), 'udi-carrier': str('udiCarrier.carrierHRF') },
  DiagnosticReport: {
    identifier, status: code('status'), code: concept('code'), category: concept('category'), date: date(['effectiveDateTime'], ['effectivePeriod']),
    issued: date(['issued']), ...subject, encounter: ref('encounter'), performer: ref('performer'), result: ref('result'), conclusion: concept('conclusionCode'),
  },
  DocumentReference: {
    identifier, status: code('status'), type: concept('type'), category: concept('category'), date: date(['date']), period: date([], ['context.period']),
    ...subject, author: ref('author'), encounter: ref('context.encounter'), contenttype: code('content.attachment.contentType'),
  },
  Encounter: {
    identifier, status: code('status'), class: tok('coding', 'class'), type: concept('type'), date: date([], ['period']), ...subject,
    participant: ref('participant.individual'), practitioner: ref('participant.individual', 'Practitioner'), 'participant-type': concept('participant.type'),
    'service-provider': ref('serviceProvider'), location: ref('location.location'), 'reason-code': concept('reasonCode'),
    'reason-reference': ref('reasonReference'), 'episode-of-care': ref('episodeOfCare'), 'part-of': ref('partOf'),
  },
  EpisodeOfCare: { identifier, status: code('status'), type: concept('type'), date: date([], ['period']), patient: ref('patient'), organization: ref('managingOrganization') },
  ExplanationOfBenefit: {
    identifier, status: code('status'), created: date(['created']), patient: ref('patient'), provider: ref('provider'), claim: ref('claim'),
    coverage: ref('insurance.coverage'), encounter: ref('item.encounter'),
  },
  FamilyMemberHistory: { identifier, status: code('status'), relationship: concept('relationship'), date: date(['date']), patient: ref('patient') },
  Goal: { identifier, 'lifecycle-status': code('lifecycleStatus'), category: concept('category'), 'start-date': date(['startDate']), ...subject },
  Group: { identifier, type: code('type'), actual: bool('actual'), code: concept('code'), member: ref('member.entity') },
  ImagingStudy: { identifier, status: code('status'), started: date(['started']), ...subject, encounter: ref('encounter'), modality: tok('coding', 'series.modality') },
  Immunization: {
    identifier, status: code('status'), 'vaccine-code': concept('vaccineCode'), date: date(['occurrenceDateTime']), patient: ref('patient'),
    location: ref('location'), performer: ref('performer.actor'), 'lot-number': str('lotNumber'), 'reason-code': concept('reasonCode'),
  },
  Location: { identifier, name: str('name', 'alias'), status: code('status'), type: concept('type'), organization: ref('managingOrganization'), address: address('address'), 'address-city': str('address.city'), 'address-state': str('address.state') },
  Medication: { identifier, code: concept('code'), status: code('status'), form: concept('form') },
  MedicationAdministration: {
    identifier, status: code('status'), code: concept('medicationCodeableConcept'), medication: ref('medicationReference'),
    'effective-time': date(['effectiveDateTime'], ['effectivePeriod']), ...subject, context: ref('context'), request: ref('request'),
  },
  MedicationDispense: {
    identifier, status: code('status'), code: concept('medicationCodeableConcept'), medication: ref('medicationReference'), ...subject,
    whenhandedover: date(['whenHandedOver']), whenprepared: date(['whenPrepared']),
  },
  MedicationRequest: {
    identifier, status: code('status'), intent: code('intent'), priority: code('priority'), category: concept('category'),
    code: concept('medicationCodeableConcept'), medication: ref('medicationReference'), authoredon: date(['authoredOn']), ...subject,
    encounter: ref('encounter'), requester: ref('requester'), 'intended-performer': ref('performer'),
  },
  MedicationStatement: {
    identifier, status: code('status'), category: concept('category'), code: concept('medicationCodeableConcept'), medication: ref('medicationReference'),
    effective: date(['effectiveDateTime'], ['effectivePeriod']), ...subject, context: ref('context'),
  },
  Observation: {
    identifier, status: code('status'), code: concept('code'), category: concept('category'), 'component-code': concept('component.code'),
    'combo-code': concept('code', 'component.code'), date: date(['effectiveDateTime', 'effectiveInstant'], ['effectivePeriod']),
    ...subject, encounter: ref('encounter'), performer: ref('performer'), 'based-on': ref('basedOn'), 'has-member': ref('hasMember'),
    'value-concept': concept('valueCodeableConcept'), 'value-date': date(['valueDateTime'], ['valuePeriod']), 'value-string': str('valueString'),
  },
  Organization: { identifier, name: str('name', 'alias'), active: bool('active'), type: concept('type'), partof: ref('partOf'), address: address('address'), 'address-city': str('address.city'), 'address-state': str('address.state') },
  Patient: {
    identifier, active: bool('active'), gender: code('gender'), birthdate: date(['birthDate']), 'death-date': date(['deceasedDateTime']),
    deceased: bool('deceasedBoolean'), name: humanName('name'), family: str('name.family'), given: str('name.given'),
    address: address('address'), 'address-city': str('address.city'), 'address-state': str('address.state'),
    'address-postalcode': str('address.postalCode'), 'address-country': str('address.country'), language: concept('communication.language'),
    'general-practitioner': ref('generalPractitioner'), organization: ref('managingOrganization'), link: ref('link.other'),
  },
  Practitioner: { identifier, active: bool('active'), gender: code('gender'), name: humanName('name'), family: str('name.family'), given: str('name.given'), address: address('address'), 'address-city': str('address.city'), 'address-state': str('address.state') },
  PractitionerRole: { identifier, active: bool('active'), practitioner: ref('practitioner'), organization: ref('organization'), role: concept('code'), specialty: concept('specialty'), location: ref('location') },
  Procedure: {
    identifier, status: code('status'), code: concept('code'), category: concept('category'), date: date(['performedDateTime'], ['performedPeriod']),
    ...subject, encounter: ref('encounter'), performer: ref('performer.actor'), location: ref('location'), 'reason-code': concept('reasonCode'),
  },
  Provenance: { target: ref('target'), patient: ref('target', 'Patient'), agent: ref('agent.who'), recorded: date(['recorded']) },
  QuestionnaireResponse: { identifier, status: code('status'), authored: date(['authored']), ...subject, encounter: ref('encounter'), author: ref('author') },
  RelatedPerson: { identifier, active: bool('active'), patient: ref('patient'), name: humanName('name'), gender: code('gender') },
  ServiceRequest: {
    identifier, status: code('status'), intent: code('intent'), code: concept('code'), category: concept('category'), authored: date(['authoredOn']),
    ...subject, encounter: ref('encounter'), requester: ref('requester'), performer: ref('performer'),
  },
  Specimen: { identifier, status: code('status'), type: concept('type'), ...subject, collected: date(['collection.collectedDateTime'], ['collection.collectedPeriod']) },
  SupplyDelivery: { identifier, status: code('status'), patient: ref('patient'), supplier: ref('supplier'), receiver: ref('receiver') },
};

/** The definition of `name` on `type`, or undefined when the server does not evaluate it. */
export function searchParam(type: string, name: string): SearchParamDef | undefined {
  return Object.hasOwn(PARAMS, type) && Object.hasOwn(PARAMS[type]!, name) ? PARAMS[type]![name] : undefined;
}

/** The names evaluated on `type` (besides `_id` and `_lastUpdated`), for messages and the CapabilityStatement. */
export function searchParamNames(type: string): string[] {
  return Object.hasOwn(PARAMS, type) ? Object.keys(PARAMS[type]!).sort() : [];
}

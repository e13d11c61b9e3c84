/**
 * The R4 Patient compartment (http://hl7.org/fhir/R4/compartmentdefinition-patient.html): for each
 * type in it, the paths of the references named by its `param`s, taken from each search
 * parameter's R4 expression (e.g. Encounter `patient` is `Encounter.subject`, Procedure
 * `performer` is `Procedure.performer.actor`). Paths are jsonpath in lax mode, so a path through
 * an array visits every item. Patient itself: its own id, plus `link.other`.
 */
const COMPARTMENT: Record<string, string[]> = {
  Account: ['subject'],
  AdverseEvent: ['subject'],
  AllergyIntolerance: ['patient', 'recorder', 'asserter'],
  Appointment: ['participant.actor'],
  AppointmentResponse: ['actor'],
  AuditEvent: ['agent.who', 'entity.what'],
  Basic: ['subject', 'author'],
  BodyStructure: ['patient'],
  CarePlan: ['subject', 'activity.detail.performer'],
  CareTeam: ['subject', 'participant.member'],
  ChargeItem: ['subject'],
  Claim: ['patient', 'payee.party'],
  ClaimResponse: ['patient'],
  ClinicalImpression: ['subject'],
  Communication: ['subject', 'sender', 'recipient'],
  CommunicationRequest: ['subject', 'sender', 'recipient', 'requester'],
  Composition: ['subject', 'author', 'attester.party'],
  Condition: ['subject', 'asserter'],
  Consent: ['patient'],
  Coverage: ['policyHolder', 'subscriber', 'beneficiary', 'payor'],
  CoverageEligibilityRequest: ['patient'],
  CoverageEligibilityResponse: ['patient'],
  DetectedIssue: ['patient'],
  DeviceRequest: ['subject', 'performer'],
  DeviceUseStatement: ['subject'],
  DiagnosticReport: ['subject'],
  DocumentManifest: ['subject', 'author', 'recipient'],
  DocumentReference: ['subject', 'author'],
  Encounter: ['subject'],
  EnrollmentRequest: ['candidate'],
  EpisodeOfCare: ['patient'],
  ExplanationOfBenefit: ['patient', 'payee.party'],
  FamilyMemberHistory: ['patient'],
  Flag: ['subject'],
  Goal: ['subject'],
  Group: ['member.entity'],
  ImagingStudy: ['subject'],
  Immunization: ['patient'],
  ImmunizationEvaluation: ['patient'],
  ImmunizationRecommendation: ['patient'],
  Invoice: ['subject', 'recipient'],
  List: ['subject', 'source'],
  MeasureReport: ['subject'],
  Media: ['subject'],
  MedicationAdministration: ['subject', 'performer.actor'],
  MedicationDispense: ['subject', 'receiver'],
  MedicationRequest: ['subject'],
  MedicationStatement: ['subject'],
  MolecularSequence: ['patient'],
  NutritionOrder: ['patient'],
  Observation: ['subject', 'performer'],
  Patient: ['link.other'],
  Person: ['link.target'],
  Procedure: ['subject', 'performer.actor'],
  Provenance: ['target'],
  QuestionnaireResponse: ['subject', 'author'],
  RelatedPerson: ['patient'],
  RequestGroup: ['subject', 'action.participant'],
  ResearchSubject: ['individual'],
  RiskAssessment: ['subject'],
  Schedule: ['actor'],
  ServiceRequest: ['subject', 'performer'],
  Specimen: ['subject'],
  SupplyDelivery: ['patient'],
  SupplyRequest: ['deliverTo'],
  VisionPrescription: ['patient'],
};

/**
 * Resources outside every compartment that a patient export ships when its compartment resources
 * reference them (`Type/id`), so the data can be read: who, where, which organisation, which drug.
 */
export const REFERENCED_TYPES: readonly string[] = ['Practitioner', 'Organization', 'Location', 'Medication'];

export const COMPARTMENT_TYPES: readonly string[] = Object.keys(COMPARTMENT).sort();

export function inCompartment(type: string): boolean {
  return Object.hasOwn(COMPARTMENT, type);
}

/** The jsonpaths (`$.subject.reference` …) of the type's compartment references; [] outside it. */
export function compartmentPaths(type: string): string[] {
  return (COMPARTMENT[type] ?? []).map((p) => `$.${p}.reference`);
}

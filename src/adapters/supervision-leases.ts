/** Who supervises a job, until when. */
export interface SupervisionLeases {
  readonly holder: string;
  /** True until the expiry last written (`now`: the runtime's clock); a holder whose renewals fail stops holding. */
  holds(jobId: string, now?: number): boolean;
  /** Takes the lease if free, expired or already ours; true when held now. */
  acquire(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  /** Extends a held lease; false (and no longer held) when another runtime took it. */
  renew(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  release(jobId: string): Promise<void>;
  list(): Promise<Array<{ jobId: string; lease: { holder: string; until: number } }>>;
  remove(jobId: string): Promise<void>;
}

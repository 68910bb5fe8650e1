/** Types of protocol-types.mjs, for the unit test that imports it. */
export declare const SCRIPT: string;
export declare const SCHEMA_DIR: string;
export declare const GENERATED: string;
export declare function renderProtocolTypes(schemaDir?: string): Promise<string>;

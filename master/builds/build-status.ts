/**
 * The build status machine lives in master/model/build-status.ts. This name stays for master/http, which
 * another change rewrites (issue 9, item 4); new code imports the model.
 */
export { buildDetails, isTerminal } from '../model/build-status.ts';
